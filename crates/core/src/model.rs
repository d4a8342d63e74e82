//! The Feast object model.
//!
//! feast-rs keeps one representation of every registry object: the Feast proto message
//! itself (`feast_proto::core::*`), so conversion to and from the wire and the `registry.db`
//! file is lossless by construction. This module adds what the protos lack: the kind of each
//! object, its name/project/tags/timestamps behind one trait ([`RegistryObject`]) so the
//! registry, diff and CLI are written once for every kind, plus typed accessors
//! ([`FeatureViewExt`], ...) for the values services reason about.

use std::collections::BTreeMap;

use feast_proto::core;
use prost_types::{Duration, Timestamp};

use crate::error::{ErrorClass, FeastError};

/// Name of the entity Feast attaches to feature views that declare no entities.
pub const DUMMY_ENTITY_NAME: &str = "__dummy";
/// Join key of [`DUMMY_ENTITY_NAME`].
pub const DUMMY_ENTITY_ID: &str = "__dummy_id";
/// Value of [`DUMMY_ENTITY_ID`] in entity keys.
pub const DUMMY_ENTITY_VAL: &str = "";

/// Every kind of object a Feast registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Project,
    DataSource,
    Entity,
    FeatureView,
    OnDemandFeatureView,
    StreamFeatureView,
    LabelView,
    FeatureService,
    Permission,
    SavedDataset,
    ValidationReference,
}

impl ObjectKind {
    /// Feast's `FeastObjectType` value, used in `apply`/`plan` output ("feature view").
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::DataSource => "data source",
            Self::Entity => "entity",
            Self::FeatureView => "feature view",
            Self::OnDemandFeatureView => "on demand feature view",
            Self::StreamFeatureView => "stream feature view",
            Self::LabelView => "label view",
            Self::FeatureService => "feature service",
            Self::Permission => "permission",
            Self::SavedDataset => "saved dataset",
            Self::ValidationReference => "validation reference",
        }
    }

    /// The Python class name (used in permission errors and `registry-dump`).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Project => "Project",
            Self::DataSource => "DataSource",
            Self::Entity => "Entity",
            Self::FeatureView => "FeatureView",
            Self::OnDemandFeatureView => "OnDemandFeatureView",
            Self::StreamFeatureView => "StreamFeatureView",
            Self::LabelView => "LabelView",
            Self::FeatureService => "FeatureService",
            Self::Permission => "Permission",
            Self::SavedDataset => "SavedDataset",
            Self::ValidationReference => "ValidationReference",
        }
    }

    /// True for the kinds that share one namespace of feature-view names.
    pub fn is_feature_view(self) -> bool {
        matches!(
            self,
            Self::FeatureView
                | Self::OnDemandFeatureView
                | Self::StreamFeatureView
                | Self::LabelView
        )
    }

    /// The exception and message Feast raises when an object of this kind is missing.
    pub fn not_found(self, name: &str, project: &str) -> FeastError {
        let (class, what) = match self {
            Self::Entity => (ErrorClass::EntityNotFoundException, "Entity"),
            Self::FeatureView | Self::StreamFeatureView | Self::LabelView => {
                (ErrorClass::FeatureViewNotFoundException, "Feature view")
            }
            Self::OnDemandFeatureView => (
                ErrorClass::OnDemandFeatureViewNotFoundException,
                "Feature view",
            ),
            Self::FeatureService => (
                ErrorClass::FeatureServiceNotFoundException,
                "Feature service",
            ),
            Self::DataSource => (ErrorClass::DataSourceObjectNotFoundException, "Data source"),
            Self::SavedDataset => (ErrorClass::SavedDatasetNotFound, "Saved dataset"),
            Self::ValidationReference => (
                ErrorClass::ValidationReferenceNotFound,
                "Validation reference",
            ),
            Self::Permission => (ErrorClass::PermissionObjectNotFoundException, "Permission"),
            Self::Project => {
                return FeastError::new(
                    ErrorClass::ProjectObjectNotFoundException,
                    format!("Project {name} does not exist"),
                );
            }
        };
        FeastError::new(
            class,
            format!("{what} {name} does not exist in project {project}"),
        )
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display_name())
    }
}

/// What the registry needs from every object: identity, tags, timestamps, and where the
/// object lives inside a `feast.core.Registry`.
pub trait RegistryObject:
    prost::Message + prost::Name + Clone + PartialEq + Default + 'static
{
    const KIND: ObjectKind;

    fn name(&self) -> &str;
    /// The project the object belongs to (for a project: its own name).
    fn project(&self) -> &str;
    fn set_project(&mut self, project: &str);
    fn tags(&self) -> &BTreeMap<String, String>;
    fn created_timestamp(&self) -> Option<&Timestamp>;
    fn last_updated_timestamp(&self) -> Option<&Timestamp>;
    fn set_timestamps(&mut self, created: Option<Timestamp>, last_updated: Option<Timestamp>);

    /// The registry's collection of this kind.
    fn collection(registry: &core::Registry) -> &Vec<Self>;
    fn collection_mut(registry: &mut core::Registry) -> &mut Vec<Self>;

    /// The part of the object a user declares (the `spec`, or the whole message for the flat
    /// kinds), without `project` and without server-managed metadata: what `plan` compares.
    fn declared(&self) -> Self;
}

macro_rules! spec_meta_object {
    ($ty:ty, $kind:expr, $coll:ident) => {
        spec_meta_object!(@impl $ty, $kind, $coll, project);
    };
    // A project's "project" is its own name and cannot be changed.
    ($ty:ty, $kind:expr, $coll:ident, project_is_name) => {
        spec_meta_object!(@impl $ty, $kind, $coll, name);
    };
    (@impl $ty:ty, $kind:expr, $coll:ident, $project_field:ident) => {
        impl RegistryObject for $ty {
            const KIND: ObjectKind = $kind;

            fn name(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.name.as_str())
            }
            fn project(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.$project_field.as_str())
            }
            fn set_project(&mut self, project: &str) {
                if stringify!($project_field) == "project" {
                    self.spec.get_or_insert_with(Default::default).$project_field = project.to_owned();
                }
            }
            fn tags(&self) -> &BTreeMap<String, String> {
                static EMPTY: BTreeMap<String, String> = BTreeMap::new();
                self.spec.as_ref().map_or(&EMPTY, |s| &s.tags)
            }
            fn created_timestamp(&self) -> Option<&Timestamp> {
                self.meta.as_ref().and_then(|m| m.created_timestamp.as_ref())
            }
            fn last_updated_timestamp(&self) -> Option<&Timestamp> {
                self.meta.as_ref().and_then(|m| m.last_updated_timestamp.as_ref())
            }
            fn set_timestamps(&mut self, created: Option<Timestamp>, last_updated: Option<Timestamp>) {
                let meta = self.meta.get_or_insert_with(Default::default);
                meta.created_timestamp = created;
                meta.last_updated_timestamp = last_updated;
            }
            fn collection(registry: &core::Registry) -> &Vec<Self> {
                &registry.$coll
            }
            fn collection_mut(registry: &mut core::Registry) -> &mut Vec<Self> {
                &mut registry.$coll
            }
            fn declared(&self) -> Self {
                let mut out = Self { spec: self.spec.clone(), meta: None };
                if stringify!($project_field) == "project" {
                    if let Some(spec) = out.spec.as_mut() {
                        spec.$project_field.clear();
                    }
                }
                strip_data_source_meta(&mut out);
                out
            }
        }
    };
}

spec_meta_object!(core::Entity, ObjectKind::Entity, entities);
spec_meta_object!(core::FeatureView, ObjectKind::FeatureView, feature_views);
spec_meta_object!(
    core::OnDemandFeatureView,
    ObjectKind::OnDemandFeatureView,
    on_demand_feature_views
);
spec_meta_object!(
    core::StreamFeatureView,
    ObjectKind::StreamFeatureView,
    stream_feature_views
);
spec_meta_object!(core::LabelView, ObjectKind::LabelView, label_views);
spec_meta_object!(
    core::FeatureService,
    ObjectKind::FeatureService,
    feature_services
);
spec_meta_object!(core::Permission, ObjectKind::Permission, permissions);
spec_meta_object!(core::SavedDataset, ObjectKind::SavedDataset, saved_datasets);
spec_meta_object!(
    core::Project,
    ObjectKind::Project,
    projects,
    project_is_name
);

impl RegistryObject for core::DataSource {
    const KIND: ObjectKind = ObjectKind::DataSource;

    fn name(&self) -> &str {
        &self.name
    }
    fn project(&self) -> &str {
        &self.project
    }
    fn set_project(&mut self, project: &str) {
        self.project = project.to_owned();
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
    fn created_timestamp(&self) -> Option<&Timestamp> {
        self.meta
            .as_ref()
            .and_then(|m| m.created_timestamp.as_ref())
    }
    fn last_updated_timestamp(&self) -> Option<&Timestamp> {
        self.meta
            .as_ref()
            .and_then(|m| m.last_updated_timestamp.as_ref())
    }
    fn set_timestamps(&mut self, created: Option<Timestamp>, last_updated: Option<Timestamp>) {
        let meta = self.meta.get_or_insert_with(Default::default);
        meta.created_timestamp = created;
        meta.last_updated_timestamp = last_updated;
    }
    fn collection(registry: &core::Registry) -> &Vec<Self> {
        &registry.data_sources
    }
    fn collection_mut(registry: &mut core::Registry) -> &mut Vec<Self> {
        &mut registry.data_sources
    }
    fn declared(&self) -> Self {
        let mut out = self.clone();
        out.project.clear();
        strip_data_source_meta(&mut out);
        out
    }
}

impl RegistryObject for core::ValidationReference {
    const KIND: ObjectKind = ObjectKind::ValidationReference;

    fn name(&self) -> &str {
        &self.name
    }
    fn project(&self) -> &str {
        &self.project
    }
    fn set_project(&mut self, project: &str) {
        self.project = project.to_owned();
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
    fn created_timestamp(&self) -> Option<&Timestamp> {
        None
    }
    fn last_updated_timestamp(&self) -> Option<&Timestamp> {
        None
    }
    fn set_timestamps(&mut self, _: Option<Timestamp>, _: Option<Timestamp>) {}
    fn collection(registry: &core::Registry) -> &Vec<Self> {
        &registry.validation_references
    }
    fn collection_mut(registry: &mut core::Registry) -> &mut Vec<Self> {
        &mut registry.validation_references
    }
    fn declared(&self) -> Self {
        let mut out = self.clone();
        out.project.clear();
        out
    }
}

/// Removes the server-managed `meta` of every `DataSource` nested anywhere in `message`
/// (feature views embed their sources with timestamps; a declaration never has them).
pub fn strip_data_source_meta<M: prost::Message + prost::Name + Default>(message: &mut M) {
    for_each_data_source(message, &mut |source| source.meta = None);
}

/// Calls `f` on every `feast.core.DataSource` inside `message` (at any depth, including a
/// push source's batch source), writing back what `f` changes. Generic over every Feast
/// message through reflection, so new proto fields holding sources are covered too.
pub fn for_each_data_source<M: prost::Message + prost::Name + Default>(
    message: &mut M,
    f: &mut dyn FnMut(&mut core::DataSource),
) {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};

    fn walk(msg: &mut DynamicMessage, f: &mut dyn FnMut(&mut core::DataSource)) {
        if msg.descriptor().full_name() == "feast.core.DataSource"
            && let Ok(mut source) = msg.transcode_to::<core::DataSource>()
        {
            f(&mut source);
            // transcode_from merges (repeated fields would append): start from empty.
            msg.clear();
            if msg.transcode_from(&source).is_err() {
                return;
            }
        }
        let fields: Vec<_> = msg.descriptor().fields().collect();
        for field in fields {
            if !msg.has_field(&field) {
                continue;
            }
            match msg.get_field_mut(&field) {
                Value::Message(m) => walk(m, f),
                Value::List(items) => {
                    for item in items {
                        if let Value::Message(m) = item {
                            walk(m, f);
                        }
                    }
                }
                Value::Map(entries) => {
                    for value in entries.values_mut() {
                        if let Value::Message(m) = value {
                            walk(m, f);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let Some(descriptor) = message_descriptor::<M>() else {
        return;
    };
    let Ok(mut dynamic) = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
    else {
        return;
    };
    walk(&mut dynamic, f);
    if let Ok(updated) = M::decode(dynamic.encode_to_vec().as_slice()) {
        *message = updated;
    }
}

/// The reflection descriptor of a generated Feast message type.
pub fn message_descriptor<M: prost::Name>() -> Option<prost_reflect::MessageDescriptor> {
    feast_proto::descriptor_pool().get_message_by_name(&M::full_name())
}

/// Converts a protobuf `Duration` to seconds (fractional).
pub fn duration_seconds(d: &Duration) -> f64 {
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

/// The name a feature-service projection serves its view under: the alias, else the view's
/// name (Feast's `name_to_use`, the prefix of full feature names).
pub fn projection_name(proj: &core::FeatureViewProjection) -> &str {
    if proj.feature_view_name_alias.is_empty() {
        &proj.feature_view_name
    } else {
        &proj.feature_view_name_alias
    }
}

/// The features a projection selects: its columns, or every feature of `view` when it names
/// none.
pub fn projection_features(
    proj: &core::FeatureViewProjection,
    view: &impl FeatureViewExt,
) -> Vec<String> {
    if proj.feature_columns.is_empty() {
        view.feature_names().iter().map(|s| s.to_string()).collect()
    } else {
        proj.feature_columns
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}

/// Feast's `_validate_feature_refs`: the output names of `(name_to_use, feature)` pairs must
/// be unique (bare feature names, or `view__feature` with `full_feature_names`); a ref
/// requested twice collides too. The error is Feast's `FeatureNameCollisionError` text.
pub fn check_feature_name_collisions<'a>(
    refs: impl IntoIterator<Item = (&'a str, &'a str)>,
    full: bool,
) -> Result<(), crate::error::FeastError> {
    let refs: Vec<(&str, &str)> = refs.into_iter().collect();
    // The common case, no collision, is checked without building a name per feature (this
    // runs on every online request). Full `view__feature` names can only be equal when their
    // lengths are; the bytes are compared on the borrowed parts.
    let full_name = |&(view, feature): &(&'a str, &'a str)| {
        view.as_bytes()
            .iter()
            .chain(b"__")
            .chain(feature.as_bytes())
    };
    let same = |a: &(&'a str, &'a str), b: &(&'a str, &'a str)| {
        if full {
            a.0.len() + a.1.len() == b.0.len() + b.1.len() && full_name(a).eq(full_name(b))
        } else {
            a.1 == b.1
        }
    };
    // A request's handful of features: every pair (mostly told apart by length); beyond,
    // sorted neighbours.
    let unique = if refs.len() <= 32 {
        refs.iter()
            .enumerate()
            .all(|(i, a)| refs[..i].iter().all(|b| !same(a, b)))
    } else {
        let mut sorted = refs.clone();
        if full {
            sorted.sort_unstable_by(|a, b| full_name(a).cmp(full_name(b)));
        } else {
            sorted.sort_unstable_by(|a, b| a.1.cmp(b.1));
        }
        sorted.windows(2).all(|w| !same(&w[0], &w[1]))
    };
    if unique {
        return Ok(());
    }
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut collided: Vec<String> = Vec::new();
    for (view, feature) in refs {
        let name = if full {
            format!("{view}__{feature}")
        } else {
            feature.to_string()
        };
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        if *n == 2 {
            collided.push(name);
        }
    }
    if collided.is_empty() {
        return Ok(());
    }
    let hint = if full {
        "To resolve this collision, please ensure that the feature views or their own features \
         have different names. If you're intentionally joining the same feature view twice on \
         different sets of entities, please rename one of the feature views with '.with_name'."
    } else {
        "To resolve this collision, either use the full feature name by setting \
         'full_feature_names=True', or ensure that the features in question have different names."
    };
    Err(crate::error::FeastError::new(
        crate::error::ErrorClass::FeatureNameCollisionError,
        format!(
            "Duplicate features named {} found.\n{hint}",
            collided.join(", ")
        ),
    ))
}

/// Typed reads of a feature view.
pub trait FeatureViewExt {
    fn spec_ref(&self) -> &core::FeatureViewSpec;

    /// The TTL, or `None` when it is unset or zero (Feast: unbounded).
    fn ttl(&self) -> Option<std::time::Duration> {
        let ttl = self.spec_ref().ttl.as_ref()?;
        let secs = duration_seconds(ttl);
        (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    }
    /// Join keys of the view's entities, in declaration order.
    fn join_keys(&self) -> Vec<&str> {
        self.spec_ref()
            .entity_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }
    fn feature_names(&self) -> Vec<&str> {
        self.spec_ref()
            .features
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }
}

impl FeatureViewExt for core::FeatureView {
    fn spec_ref(&self) -> &core::FeatureViewSpec {
        static EMPTY: std::sync::OnceLock<core::FeatureViewSpec> = std::sync::OnceLock::new();
        self.spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }
}

/// A stream feature view as the feature view its online rows belong to: a stream job, a
/// push, `write_to_online_store` or a materialization from its batch source writes them in
/// a feature view's layout, under the stream view's name. Its stream-only parts (the
/// transformation, aggregations, tiling) are left out.
pub fn stream_view_as_feature_view(sfv: &core::StreamFeatureView) -> core::FeatureView {
    let spec = sfv.spec.clone().unwrap_or_default();
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: spec.name,
            project: spec.project,
            entities: spec.entities,
            features: spec.features,
            tags: spec.tags,
            ttl: spec.ttl,
            batch_source: spec.batch_source,
            stream_source: spec.stream_source,
            online: spec.online,
            description: spec.description,
            owner: spec.owner,
            entity_columns: spec.entity_columns,
            mode: spec.mode,
            enable_validation: spec.enable_validation,
            version: spec.version,
            org: spec.org,
            disabled: spec.disabled,
            ..Default::default()
        }),
        meta: sfv.meta.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_name_collisions() {
        let check = |refs: &[(&str, &str)], full: bool| {
            check_feature_name_collisions(refs.iter().copied(), full)
                .err()
                .map(|e| e.message)
        };
        assert_eq!(check(&[], false), None);
        assert_eq!(check(&[("a", "x"), ("b", "y"), ("a", "y")], true), None);
        let short = check(&[("a", "x"), ("b", "y"), ("a", "y"), ("c", "x")], false).unwrap();
        assert!(short.contains("named y, x found"), "{short}");
        // Full names collide however the `__` splits them.
        let full = check(&[("a__b", "c"), ("v", "f"), ("a", "b__c")], true).unwrap();
        assert!(full.contains("named a__b__c found"), "{full}");
        assert_eq!(check(&[("a_", "_b"), ("a", "b")], true), None);
        // Past the pairwise check's size, the sorted check finds the same collisions.
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("v{}", i % 3), format!("f{i}")))
            .collect();
        let pairs = |extra: &[(&'static str, &'static str)]| {
            let mut refs: Vec<(&str, &str)> =
                many.iter().map(|(v, f)| (v.as_str(), f.as_str())).collect();
            refs.extend_from_slice(extra);
            refs
        };
        assert_eq!(check(&pairs(&[]), false), None);
        assert_eq!(check(&pairs(&[]), true), None);
        let short = check(&pairs(&[("w", "f7")]), false).unwrap();
        assert!(short.contains("named f7 found"), "{short}");
        assert_eq!(check(&pairs(&[("w", "f7")]), true), None);
        let full = check(&pairs(&[("v1__f", "4"), ("v1", "f__4")]), true).unwrap();
        assert!(full.contains("named v1__f__4 found"), "{full}");
    }

    #[test]
    fn feature_view_accessors() {
        let mut fv = core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: "v".into(),
                ttl: Some(Duration {
                    seconds: 90,
                    nanos: 500_000_000,
                }),
                entity_columns: vec![core::FeatureSpecV2 {
                    name: "driver_id".into(),
                    ..Default::default()
                }],
                features: vec![core::FeatureSpecV2 {
                    name: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            meta: None,
        };
        assert_eq!(fv.ttl(), Some(std::time::Duration::from_millis(90_500)));
        assert_eq!(fv.join_keys(), ["driver_id"]);
        assert_eq!(fv.feature_names(), ["x"]);
        fv.spec.as_mut().unwrap().ttl = Some(Duration::default());
        assert_eq!(fv.ttl(), None, "0s means no limit");
        assert_eq!(core::FeatureView::default().ttl(), None);
    }

    #[test]
    fn not_found_messages_are_feasts() {
        let e = ObjectKind::Entity.not_found("driver", "demo");
        assert_eq!(e.class, ErrorClass::EntityNotFoundException);
        assert_eq!(e.message, "Entity driver does not exist in project demo");
        let p = ObjectKind::Project.not_found("demo", "demo");
        assert_eq!(p.message, "Project demo does not exist");
        assert_eq!(p.class, ErrorClass::ProjectObjectNotFoundException);
    }
}
