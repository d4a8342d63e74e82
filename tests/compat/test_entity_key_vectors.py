"""The committed entity-key vectors still match what the installed Feast SDK produces.

Run with the venv's python:
    /var/tmp/feast-rs-venv/bin/python -m pytest tests/compat/test_entity_key_vectors.py
Regenerate with gen_entity_key_vectors.py after an intended change.
"""

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_entity_key_vectors as gen  # noqa: E402


def _fresh() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gen.build_vectors()


def test_committed_vectors_match_feast():
    committed = json.loads(gen.OUT.read_text(encoding="utf-8"))
    fresh = json.loads(gen.render(_fresh()))
    assert committed["feast_version"] == fresh["feast_version"]
    for section in ("serialize", "prefix", "deserialize"):
        assert len(committed[section]) == len(fresh[section]), section
        for old, new in zip(committed[section], fresh[section]):
            assert old == new, f"{section}: {old.get('name', old.get('join_keys'))}"
    assert committed == fresh


def test_committed_file_is_rendered_canonically():
    # Byte-equal too, so a regenerated file never shows a spurious diff.
    assert gen.OUT.read_text(encoding="utf-8") == gen.render(_fresh())


def test_protocol_examples_are_covered():
    # PROTOCOLS.md §6.1: driver_id=1001 in v3 and v2.
    by_version = {
        v["version"]: v["hex"]
        for v in _fresh()["serialize"]
        if v["name"] == "int64 1001" and "hex" in v
    }
    assert by_version[3] == (
        "01000000" "02000000" "09000000" "6472697665725f6964" "04000000" "08000000" "e903000000000000"
    )
    assert by_version[2] == (
        "02000000" "6472697665725f6964" "04000000" "08000000" "e903000000000000"
    )
