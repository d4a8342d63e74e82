"""Registry interoperability between feast-rs and the real Feast SDK (feast==0.67.0).

- Feast writes a registry.db, feast-rs reads and lists every object in it.
- feast-rs writes a registry.db from YAML definitions, Feast's CLI and SDK read it, and a
  transformation defined in YAML runs in Feast.
- The same repository declared in Python (Feast) and in YAML (feast-rs) registers the same
  objects, field for field.
"""

import difflib
import json

import pandas as pd
from google.protobuf.json_format import MessageToDict

from conftest import copy_repo, run
from feast import FeatureStore
from feast.protos.feast.core.Registry_pb2 import Registry

COLLECTIONS = [
    "projects",
    "entities",
    "data_sources",
    "feature_views",
    "on_demand_feature_views",
    "feature_services",
    "permissions",
]


def load_registry(repo):
    reg = Registry()
    reg.ParseFromString((repo / "data" / "registry.db").read_bytes())
    return reg


def strip(value):
    """Drops what is server-managed or cannot be equal across tools (timestamps, the
    pickled UDF bytes and its source text, data-source class paths of nested copies)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("meta", "project", "body", "bodyText"):
                continue
            out[k] = strip(v)
        return out
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def declared(obj):
    d = MessageToDict(obj)
    return strip(d.get("spec", d))


def by_name(reg, collection):
    out = {}
    for obj in getattr(reg, collection):
        d = declared(obj)
        out[d["name"]] = d
    return out


def test_same_objects_as_feast(tmp_path, feast_rs_bin, feast_cli):
    feast_repo = copy_repo("feast_repo", tmp_path)
    run([feast_cli, "apply"], cwd=feast_repo)
    yaml_repo = copy_repo("yaml_repo", tmp_path)
    run([feast_rs_bin, "-c", yaml_repo, "apply"])

    theirs, ours = load_registry(feast_repo), load_registry(yaml_repo)
    for collection in COLLECTIONS:
        expected, actual = by_name(theirs, collection), by_name(ours, collection)
        assert sorted(actual) == sorted(expected), collection
        for name in expected:
            if actual[name] != expected[name]:
                diff = difflib.unified_diff(
                    json.dumps(expected[name], indent=1, sort_keys=True).splitlines(),
                    json.dumps(actual[name], indent=1, sort_keys=True).splitlines(),
                    "feast",
                    "feast-rs",
                    lineterm="",
                )
                raise AssertionError(f"{collection}/{name} differs:\n" + "\n".join(diff))
    def history(reg):
        return sorted(
            (r.feature_view_name, r.version_number, r.feature_view_type)
            for r in reg.feature_view_version_history.records
        )

    assert history(ours) == history(theirs)
    assert ours.registry_schema_version == "1"
    assert ours.version_id and ours.HasField("last_updated")


def test_feast_reads_registry_written_by_feast_rs(tmp_path, feast_rs_bin, feast_cli):
    repo = copy_repo("yaml_repo", tmp_path)
    run([feast_rs_bin, "-c", repo, "apply"])

    listing = run([feast_cli, "-c", repo, "feature-views", "list"]).stdout
    for name in ["driver_hourly_stats", "driver_stats_fresh", "customer_driver_affinity", "transformed_conv_rate"]:
        assert name in listing
    assert "driver_activity_v1" in run([feast_cli, "-c", repo, "feature-services", "list"]).stdout
    assert "feature-readers" in run([feast_cli, "-c", repo, "permissions", "list"]).stdout

    store = FeatureStore(repo_path=str(repo))
    assert {e.name for e in store.list_entities()} == {"driver", "customer"}
    fv = store.get_feature_view("driver_hourly_stats")
    assert fv.ttl.total_seconds() == 86400
    assert [f.name for f in fv.features][:3] == ["conv_rate", "acc_rate", "avg_daily_trips"]
    assert fv.entity_columns[0].name == "driver_id"
    assert store.get_feature_view("driver_stats_fresh").stream_source.name == "driver_stats_push"
    fs = store.get_feature_service("driver_activity_v2")
    assert fs.feature_view_projections[0].name_alias == "dhs"
    assert fs.feature_view_projections[0].join_key_map == {"driver_id": "driver"}
    perm = store.get_permission("writers")
    assert perm.policy.groups == ["ml-eng"]

    # The transformation declared in YAML runs in Feast (0.67 rehydrates UDFs from source).
    odfv = store.get_on_demand_feature_view("transformed_conv_rate")
    out = odfv.feature_transformation.transform(
        pd.DataFrame({"conv_rate": [0.5], "val_to_add": [1], "val_to_add_2": [2]})
    )
    assert out["conv_rate_plus_val1"].tolist() == [1.5]
    assert out["conv_rate_plus_val2"].tolist() == [2.5]


def test_feast_rs_reads_registry_written_by_feast(tmp_path, feast_rs_bin, feast_cli):
    repo = copy_repo("feast_repo", tmp_path)
    run([feast_cli, "apply"], cwd=repo)

    def listed(kind):
        rows = json.loads(run([feast_rs_bin, "-c", repo, kind, "list", "-o", "json"]).stdout)
        return sorted(object_name(r) for r in rows)

    store = FeatureStore(repo_path=str(repo))
    assert listed("entities") == sorted(e.name for e in store.list_entities())
    assert listed("feature-services") == sorted(s.name for s in store.list_feature_services())
    assert listed("on-demand-feature-views") == sorted(v.name for v in store.list_on_demand_feature_views())
    assert listed("permissions") == sorted(p.name for p in store.list_permissions())
    assert listed("data-sources") == sorted(d.name for d in store.list_data_sources())

    table = run([feast_rs_bin, "-c", repo, "feature-views", "list"]).stdout
    for fv in store.list_feature_views():
        assert fv.name in table

    dump = json.loads(run([feast_rs_bin, "-c", repo, "registry-dump"]).stdout)
    assert [v["spec"]["name"] for v in dump["featureViews"]] == sorted(v.name for v in store.list_feature_views())
    assert dump["project"] == "compat"

    described = run([feast_rs_bin, "-c", repo, "feature-views", "describe", "driver_hourly_stats", "-o", "json"]).stdout
    assert json.loads(described)["spec"]["ttl"] == "86400s"


def object_name(row):
    return row["spec"]["name"] if "spec" in row else row["name"]


def test_plan_is_empty_after_apply(tmp_path, feast_rs_bin):
    repo = copy_repo("yaml_repo", tmp_path)
    first = run([feast_rs_bin, "-c", repo, "apply"]).stdout
    assert "Created feature view driver_hourly_stats" in first
    registry_before = (repo / "data" / "registry.db").read_bytes()
    assert "No changes to registry" in run([feast_rs_bin, "-c", repo, "plan"]).stdout
    assert "No changes to registry" in run([feast_rs_bin, "-c", repo, "apply"]).stdout
    assert (repo / "data" / "registry.db").read_bytes() == registry_before
