"""The committed Value <-> JSON vectors still match what the installed Feast SDK produces.

Run with the venv's python:
    /var/tmp/feast-rs-venv/bin/python -m pytest tests/compat/test_value_vectors.py
Regenerate with gen_value_vectors.py after an intended change.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_value_vectors as gen  # noqa: E402


def test_committed_vectors_match_feast():
    committed = json.loads(gen.OUT.read_text(encoding="utf-8"))
    fresh = json.loads(gen.render(gen.quiet_build()))
    assert committed["feast_version"] == fresh["feast_version"]
    for section in ("to_json", "from_json"):
        assert len(committed[section]) == len(fresh[section]), section
        for old, new in zip(committed[section], fresh[section]):
            assert old == new, f"{section}: {old['name']}"
    assert gen.OUT.read_text(encoding="utf-8") == gen.render(gen.quiet_build())


def test_floats_stay_floats():
    # The Python client re-types values by JSON kind: an integral double must print as 1.0.
    by_name = {v["name"]: v for v in gen.quiet_build()["to_json"]}
    assert gen.render({"x": by_name["double integral"]["json"]}).find("1.0") != -1
    assert isinstance(by_name["double integral"]["json"], float)
