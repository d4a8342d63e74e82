"""A Feast-SDK feature repository exercising every object kind feast-rs must read and write."""

from datetime import timedelta

import pandas as pd

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    Project,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import GroupBasedPolicy, RoleBasedPolicy
from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

project = Project(name="compat", description="feast-rs compatibility repo", tags={"team": "ml"}, owner="ml@example.com")

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64, description="A driver", tags={"pii": "no"})
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)

driver_stats_source = FileSource(
    name="driver_hourly_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    field_mapping={"conv": "conv_rate"},
    description="hourly driver stats",
    tags={"origin": "batch"},
)

driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats_source)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32, description="conversion"),
        Field(name="acc_rate", dtype=Float64),
        Field(name="avg_daily_trips", dtype=Int64, tags={"unit": "trips"}),
        Field(name="rating", dtype=Int32),
        Field(name="active", dtype=Bool),
        Field(name="name", dtype=String),
        Field(name="avatar", dtype=Bytes),
        Field(name="last_seen", dtype=UnixTimestamp),
        Field(name="recent_trips", dtype=Array(Int64)),
        Field(name="scores", dtype=Array(Float64)),
    ],
    online=True,
    source=driver_stats_source,
    tags={"team": "driver_performance"},
    owner="driver-team@example.com",
    description="Hourly driver statistics",
)

driver_stats_fresh = FeatureView(
    name="driver_stats_fresh",
    entities=[driver],
    ttl=timedelta(hours=2),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float64)],
    source=driver_stats_push,
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path="data/customer_profile.parquet",
    timestamp_field="event_timestamp",
)

customer_driver = FeatureView(
    name="customer_driver_affinity",
    entities=[driver, customer],
    ttl=timedelta(seconds=0),
    schema=[Field(name="affinity", dtype=Float64)],
    source=customer_profile_source,
    online=False,
)

input_request = RequestSource(
    name="vals_to_add",
    schema=[Field(name="val_to_add", dtype=Int64), Field(name="val_to_add_2", dtype=Int64)],
)


@on_demand_feature_view(
    sources=[driver_hourly_stats, input_request],
    schema=[Field(name="conv_rate_plus_val1", dtype=Float64), Field(name="conv_rate_plus_val2", dtype=Float64)],
)
def transformed_conv_rate(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
    df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
    return df


driver_activity_v1 = FeatureService(
    name="driver_activity_v1",
    features=[driver_hourly_stats[["conv_rate", "acc_rate"]], transformed_conv_rate],
    tags={"stage": "prod"},
    description="model v1",
)

driver_activity_v2 = FeatureService(
    name="driver_activity_v2",
    features=[driver_hourly_stats.with_name("dhs").with_join_key_map({"driver_id": "driver"})],
)

readers = Permission(
    name="feature-readers",
    types=[FeatureView, FeatureService],
    name_patterns=["driver.*"],
    policy=RoleBasedPolicy(roles=["reader"]),
    actions=[AuthzedAction.DESCRIBE, AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE],
    required_tags={"team": "driver_performance"},
)

writers = Permission(
    name="writers",
    types=[FeatureView],
    policy=GroupBasedPolicy(groups=["ml-eng"]),
    actions=[AuthzedAction.WRITE_ONLINE, AuthzedAction.WRITE_OFFLINE],
)
