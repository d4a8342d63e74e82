//! The registry: Feast's catalog of projects and their objects, held as one
//! `feast.core.Registry` proto (exactly what `registry.db` stores).
//!
//! [`Catalog`] implements Feast's apply/get/list/delete semantics once, generically over
//! [`RegistryObject`]; stores ([`file`]) load and persist it; [`diff`] computes `plan`.

pub mod diff;
pub mod file;

use std::collections::BTreeMap;

use feast_proto::core;
use prost::Message;
use prost_types::Timestamp;

use crate::error::{ErrorClass, FeastError};
use crate::model::{ObjectKind, RegistryObject};

/// `registry_schema_version` of a new registry (Feast's `REGISTRY_SCHEMA_VERSION`).
pub const REGISTRY_SCHEMA_VERSION: &str = "1";

/// Converts a chrono time to a protobuf timestamp, at microsecond precision: Feast's
/// timestamps come from Python `datetime`s, and a nanosecond that Python cannot represent
/// would make the same object compare unequal after Feast round-trips it.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: (t.timestamp_subsec_micros() * 1000) as i32,
    }
}

/// Converts a protobuf timestamp to chrono (None when out of range).
pub fn to_datetime(t: &Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

/// An in-memory registry with Feast's semantics.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    proto: core::Registry,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// An empty registry, as Feast creates when `registry.db` does not exist.
    pub fn new() -> Self {
        Self {
            proto: core::Registry {
                registry_schema_version: REGISTRY_SCHEMA_VERSION.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Wraps a registry read from storage. Projects known only from the deprecated
    /// `project_metadata` are synthesized into `projects`, as Feast does at load time.
    pub fn from_proto(mut proto: core::Registry) -> Self {
        let known: Vec<String> = proto.projects.iter().map(|p| p.name().to_owned()).collect();
        let mut synthesized = Vec::new();
        for meta in &proto.project_metadata {
            if !meta.project.is_empty()
                && !known.contains(&meta.project)
                && !synthesized
                    .iter()
                    .any(|p: &core::Project| p.name() == meta.project)
            {
                synthesized.push(core::Project {
                    spec: Some(core::ProjectSpec {
                        name: meta.project.clone(),
                        ..Default::default()
                    }),
                    meta: Some(core::ProjectMeta {
                        created_timestamp: proto.last_updated,
                        last_updated_timestamp: proto.last_updated,
                    }),
                });
            }
        }
        proto.projects.extend(synthesized);
        Self { proto }
    }

    pub fn proto(&self) -> &core::Registry {
        &self.proto
    }

    pub fn into_proto(self) -> core::Registry {
        self.proto
    }

    /// `version_id` of the last commit ("" for a registry never committed).
    pub fn version_id(&self) -> &str {
        &self.proto.version_id
    }

    /// Finds an object by name in a project.
    pub fn get<T: RegistryObject>(&self, name: &str, project: &str) -> Result<&T, FeastError> {
        T::collection(&self.proto)
            .iter()
            .find(|o| o.name() == name && o.project() == project)
            .ok_or_else(|| T::KIND.not_found(name, project))
    }

    /// Objects of one kind in a project, in registry order, optionally filtered by tags
    /// (every requested `k=v` must be present, as Feast's `has_all_tags`).
    pub fn list<'a, T: RegistryObject>(
        &'a self,
        project: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a T> + 'a {
        T::collection(&self.proto)
            .iter()
            .filter(move |o| o.project() == project && has_all_tags(o.tags(), tags))
    }

    /// Projects, optionally filtered by tags.
    pub fn projects<'a>(
        &'a self,
        tags: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a core::Project> + 'a {
        self.proto
            .projects
            .iter()
            .filter(move |p| has_all_tags(p.tags(), tags))
    }

    /// True when the project exists.
    pub fn has_project(&self, project: &str) -> bool {
        self.proto.projects.iter().any(|p| p.name() == project)
    }

    /// Creates the project (and its metadata row) if it does not exist yet, as Feast's
    /// `_prepare_registry_for_changes`. Returns true when it was created.
    pub fn ensure_project(&mut self, project: &str, now: Timestamp) -> bool {
        if self.has_project(project) {
            return false;
        }
        self.proto.projects.push(core::Project {
            spec: Some(core::ProjectSpec {
                name: project.to_owned(),
                ..Default::default()
            }),
            meta: Some(core::ProjectMeta {
                created_timestamp: Some(now),
                last_updated_timestamp: Some(now),
            }),
        });
        if !self
            .proto
            .project_metadata
            .iter()
            .any(|m| m.project == project)
        {
            #[allow(deprecated)]
            self.proto.project_metadata.push(core::ProjectMetadata {
                project: project.to_owned(),
                project_uuid: uuid::Uuid::new_v4().to_string(),
            });
        }
        true
    }

    /// Inserts or replaces an object (matched by name and project) with Feast's upsert
    /// rules: the stored project is `project`, `created_timestamp` is kept from the existing
    /// object (or set to `now`), `last_updated_timestamp` is `now`, feature views keep their
    /// materialization intervals, version number and state (unless the new object sets a
    /// state: Feast's materialize applies MATERIALIZING), and a feature-view name already
    /// used by another view kind is rejected.
    pub fn apply<T: RegistryObject>(
        &mut self,
        mut object: T,
        project: &str,
        now: Timestamp,
    ) -> Result<(), FeastError> {
        let name = object.name().to_owned();
        if name.is_empty() {
            return Err(FeastError::new(
                ErrorClass::FeastError,
                format!("Cannot apply a {} without a name", T::KIND),
            ));
        }
        if T::KIND.is_feature_view() {
            self.check_view_name_free(&name, project, T::KIND)?;
        }
        if T::KIND != ObjectKind::Project {
            self.ensure_project(project, now);
        }
        object.set_project(project);
        let pinned = match T::KIND.is_feature_view() {
            true => self.resolve_pin(&mut object, project, now)?,
            false => None,
        };
        let collection = T::collection_mut(&mut self.proto);
        let existing = collection
            .iter()
            .position(|o| o.name() == name && o.project() == project);
        let created = existing
            .and_then(|i| collection[i].created_timestamp().copied())
            .or_else(|| object.created_timestamp().copied())
            .unwrap_or(now);
        object.set_timestamps(Some(created), Some(now));
        let previous = existing.map(|i| {
            carry_server_state(&collection[i], &mut object);
            collection[i].clone()
        });
        match pinned {
            // A pinned definition is that version, recorded already: no new version.
            Some(version) => set_current_version(&mut object, version),
            None if T::KIND.is_feature_view() => {
                self.record_version(previous.as_ref(), &mut object, project, now)
            }
            None => {}
        }
        let collection = T::collection_mut(&mut self.proto);
        match existing {
            Some(i) => collection[i] = object,
            None => collection.push(object),
        }
        Ok(())
    }

    /// A view definition that pins a version (`version: "v2"`), as Feast 0.67 applies it:
    /// pinning a recorded version restores that version's definition (refused with
    /// `FeatureViewPinConflict` when the definition was changed too, since only the version
    /// may change in a pin); pinning a version not recorded yet declares it, recording this
    /// definition as that version. Returns the pinned version (`None` for the latest) and
    /// replaces `object` with the definition to store.
    fn resolve_pin<T: RegistryObject>(
        &mut self,
        object: &mut T,
        project: &str,
        now: Timestamp,
    ) -> Result<Option<i32>, FeastError> {
        let declared_version = spec_version(object).unwrap_or_default().to_owned();
        let Some(version) = crate::version::parse_version(&declared_version)? else {
            return Ok(None);
        };
        let Some((kind, _)) = version_fingerprint(object) else {
            return Ok(None);
        };
        let name = object.name().to_owned();
        let recorded = self
            .proto
            .feature_view_version_history
            .as_ref()
            .and_then(|h| {
                h.records.iter().find(|r| {
                    r.feature_view_name == name
                        && r.project_id == project
                        && r.version_number == version
                })
            })
            .cloned();
        let Some(record) = recorded else {
            // A forward declaration: this definition becomes the version.
            set_current_version(object, version);
            let history = self
                .proto
                .feature_view_version_history
                .get_or_insert_with(Default::default);
            history.records.push(version_record(
                &name,
                project,
                version,
                kind,
                object.encode_to_vec(),
                now,
            ));
            return Ok(Some(version));
        };
        if let Some(active) = T::collection(&self.proto)
            .iter()
            .find(|o| o.name() == name && o.project() == project)
        {
            let unpinned = |o: &T| {
                let mut d = o.declared();
                set_spec_version(&mut d, "");
                crate::model::strip_data_source_meta(&mut d);
                d
            };
            if unpinned(active) != unpinned(object) {
                return Err(FeastError::new(
                    ErrorClass::FeatureViewPinConflict,
                    format!(
                        "Cannot pin feature view '{name}' to v{version} because the definition \
                         has also been modified. To pin to an older version, only change the \
                         'version' parameter — do not modify other fields. To apply a new \
                         definition, use version='latest' or omit the version parameter."
                    ),
                ));
            }
        }
        if record.feature_view_type != kind {
            return Err(FeastError::new(
                ErrorClass::FeastError,
                format!(
                    "Cannot pin {} '{name}' to v{version}: that version is a {}",
                    T::KIND.class_name(),
                    record.feature_view_type
                ),
            ));
        }
        let mut restored = T::decode(record.feature_view_proto.as_slice()).map_err(|e| {
            FeastError::new(
                ErrorClass::FeastError,
                format!("version v{version} of feature view {name} is undecodable: {e}"),
            )
        })?;
        restored.set_project(project);
        set_spec_version(&mut restored, &declared_version);
        *object = restored;
        Ok(Some(version))
    }

    /// Feast's feature-view version history: a new view is recorded as version 0; a view
    /// whose schema (features, entities, or transformation) changed gets the next version,
    /// with the old definition saved as version 0 if nothing was recorded before. Other
    /// changes (description, tags, ttl, sources) do not make a version.
    fn record_version<T: RegistryObject>(
        &mut self,
        previous: Option<&T>,
        object: &mut T,
        project: &str,
        now: Timestamp,
    ) {
        let name = object.name().to_owned();
        let Some((kind, fingerprint)) = version_fingerprint(object) else {
            return;
        };
        let history = self
            .proto
            .feature_view_version_history
            .get_or_insert_with(Default::default);
        let recorded: Vec<i32> = history
            .records
            .iter()
            .filter(|r| r.feature_view_name == name && r.project_id == project)
            .map(|r| r.version_number)
            .collect();
        let next = match previous {
            None if recorded.is_empty() => 0,
            None => recorded.iter().max().map_or(0, |m| m + 1),
            Some(old) => {
                if version_fingerprint(old).map(|(_, f)| f) == Some(fingerprint) {
                    return;
                }
                if recorded.is_empty() {
                    history.records.push(version_record(
                        &name,
                        project,
                        0,
                        kind,
                        old.encode_to_vec(),
                        now,
                    ));
                }
                recorded.iter().max().map_or(1, |m| m + 1)
            }
        };
        set_current_version(object, next);
        history.records.push(version_record(
            &name,
            project,
            next,
            kind,
            object.encode_to_vec(),
            now,
        ));
    }

    /// Removes an object; a missing one is Feast's not-found error for the kind.
    pub fn delete<T: RegistryObject>(
        &mut self,
        name: &str,
        project: &str,
    ) -> Result<T, FeastError> {
        let collection = T::collection_mut(&mut self.proto);
        let removed = match collection
            .iter()
            .position(|o| o.name() == name && o.project() == project)
        {
            Some(i) => collection.remove(i),
            None => return Err(T::KIND.not_found(name, project)),
        };
        if T::KIND.is_feature_view()
            && let Some(history) = self.proto.feature_view_version_history.as_mut()
        {
            // Feast's delete_feature_view drops the view's version history too.
            history
                .records
                .retain(|r| !(r.feature_view_name == name && r.project_id == project));
        }
        Ok(removed)
    }

    /// Deletes a feature view of any kind (Feast's `delete_feature_view`).
    pub fn delete_any_feature_view(
        &mut self,
        name: &str,
        project: &str,
    ) -> Result<ObjectKind, FeastError> {
        if self.delete::<core::FeatureView>(name, project).is_ok() {
            return Ok(ObjectKind::FeatureView);
        }
        if self
            .delete::<core::StreamFeatureView>(name, project)
            .is_ok()
        {
            return Ok(ObjectKind::StreamFeatureView);
        }
        if self
            .delete::<core::OnDemandFeatureView>(name, project)
            .is_ok()
        {
            return Ok(ObjectKind::OnDemandFeatureView);
        }
        if self.delete::<core::LabelView>(name, project).is_ok() {
            return Ok(ObjectKind::LabelView);
        }
        Err(ObjectKind::FeatureView.not_found(name, project))
    }

    /// Removes a project and every object scoped to it.
    pub fn delete_project(&mut self, project: &str) -> Result<(), FeastError> {
        if !self.has_project(project) {
            return Err(ObjectKind::Project.not_found(project, project));
        }
        let p = &mut self.proto;
        p.projects.retain(|o| o.name() != project);
        p.project_metadata.retain(|m| m.project != project);
        p.entities.retain(|o| o.project() != project);
        p.data_sources.retain(|o| o.project() != project);
        p.feature_views.retain(|o| o.project() != project);
        p.on_demand_feature_views.retain(|o| o.project() != project);
        p.stream_feature_views.retain(|o| o.project() != project);
        p.label_views.retain(|o| o.project() != project);
        p.feature_services.retain(|o| o.project() != project);
        p.saved_datasets.retain(|o| o.project() != project);
        p.validation_references.retain(|o| o.project() != project);
        p.permissions.retain(|o| o.project() != project);
        if let Some(history) = p.feature_view_version_history.as_mut() {
            history.records.retain(|r| r.project_id != project);
        }
        Ok(())
    }

    /// The kind of the feature view (of any kind) with this name, if any.
    pub fn feature_view_kind(&self, name: &str, project: &str) -> Option<ObjectKind> {
        let p = &self.proto;
        let hit = |k: ObjectKind, found: bool| found.then_some(k);
        hit(
            ObjectKind::FeatureView,
            p.feature_views
                .iter()
                .any(|v| v.name() == name && v.project() == project),
        )
        .or_else(|| {
            hit(
                ObjectKind::StreamFeatureView,
                p.stream_feature_views
                    .iter()
                    .any(|v| v.name() == name && v.project() == project),
            )
        })
        .or_else(|| {
            hit(
                ObjectKind::OnDemandFeatureView,
                p.on_demand_feature_views
                    .iter()
                    .any(|v| v.name() == name && v.project() == project),
            )
        })
        .or_else(|| {
            hit(
                ObjectKind::LabelView,
                p.label_views
                    .iter()
                    .any(|v| v.name() == name && v.project() == project),
            )
        })
    }

    fn check_view_name_free(
        &self,
        name: &str,
        project: &str,
        kind: ObjectKind,
    ) -> Result<(), FeastError> {
        match self.feature_view_kind(name, project) {
            Some(existing) if existing != kind => Err(conflicting_view_names(name, existing, kind)),
            _ => Ok(()),
        }
    }

    /// Feast's `apply_materialization`: appends `[start, end]` to the feature view's (or
    /// stream feature view's) materialization intervals, marks it `AVAILABLE_ONLINE` and
    /// bumps `last_updated`. A view that does not exist is silently skipped, as in Feast.
    pub fn apply_materialization(
        &mut self,
        name: &str,
        project: &str,
        start: Timestamp,
        end: Timestamp,
        now: Timestamp,
    ) {
        let interval = core::MaterializationInterval {
            start_time: Some(start),
            end_time: Some(end),
        };
        let meta = if let Some(v) = self
            .proto
            .feature_views
            .iter_mut()
            .find(|v| v.name() == name && v.project() == project)
        {
            v.meta.get_or_insert_with(Default::default)
        } else if let Some(v) = self
            .proto
            .stream_feature_views
            .iter_mut()
            .find(|v| v.name() == name && v.project() == project)
        {
            v.meta.get_or_insert_with(Default::default)
        } else {
            return;
        };
        meta.materialization_intervals.push(interval);
        meta.last_updated_timestamp = Some(now);
        meta.state = core::FeatureViewState::AvailableOnline as i32;
    }

    /// Records the infra objects of the last `apply` (Feast keeps one global `infra`).
    pub fn set_infra(&mut self, infra: core::Infra) {
        self.proto.infra = Some(infra);
    }

    /// Stamps a commit: a fresh `version_id` and `last_updated = now`, as every Feast commit.
    pub fn stamp_commit(&mut self, now: Timestamp) {
        self.proto.version_id = uuid::Uuid::new_v4().to_string();
        self.proto.last_updated = Some(now);
        if self.proto.registry_schema_version.is_empty() {
            self.proto.registry_schema_version = REGISTRY_SCHEMA_VERSION.to_owned();
        }
    }
}

/// A recorded version of a feature view, decoded from the registry's version history
/// (Feast's `get_feature_view_by_version`), with `meta.current_version_number` set to it.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewVersion {
    FeatureView(core::FeatureView),
    Stream(core::StreamFeatureView),
    OnDemand(core::OnDemandFeatureView),
    Label(core::LabelView),
}

impl Catalog {
    /// Version `version` of the view `name` in `project`, from the version history; Feast's
    /// `FeatureViewVersionNotFound` when it was never recorded.
    pub fn view_version(
        &self,
        name: &str,
        project: &str,
        version: i32,
    ) -> Result<ViewVersion, FeastError> {
        let record = self
            .proto
            .feature_view_version_history
            .as_ref()
            .and_then(|h| {
                h.records.iter().find(|r| {
                    r.feature_view_name == name
                        && r.project_id == project
                        && r.version_number == version
                })
            })
            .ok_or_else(|| crate::version::version_not_found(name, version, project))?;
        decode_version(record)
    }
}

/// Decodes one version record into its view kind.
pub fn decode_version(record: &core::FeatureViewVersionRecord) -> Result<ViewVersion, FeastError> {
    fn meta(m: &mut Option<core::FeatureViewMeta>, version: i32) {
        m.get_or_insert_with(Default::default)
            .current_version_number = version;
    }
    let bytes = record.feature_view_proto.as_slice();
    let version = record.version_number;
    let bad = |e: prost::DecodeError| {
        FeastError::new(
            ErrorClass::FeastError,
            format!(
                "version v{version} of feature view {} holds an undecodable {}: {e}",
                record.feature_view_name, record.feature_view_type
            ),
        )
    };
    Ok(match record.feature_view_type.as_str() {
        "feature_view" => {
            let mut v = core::FeatureView::decode(bytes).map_err(bad)?;
            meta(&mut v.meta, version);
            ViewVersion::FeatureView(v)
        }
        "stream_feature_view" => {
            let mut v = core::StreamFeatureView::decode(bytes).map_err(bad)?;
            meta(&mut v.meta, version);
            ViewVersion::Stream(v)
        }
        "on_demand_feature_view" => {
            let mut v = core::OnDemandFeatureView::decode(bytes).map_err(bad)?;
            v.meta
                .get_or_insert_with(Default::default)
                .current_version_number = version;
            ViewVersion::OnDemand(v)
        }
        "label_view" => ViewVersion::Label(core::LabelView::decode(bytes).map_err(bad)?),
        other => {
            return Err(FeastError::new(
                ErrorClass::FeastError,
                format!("Unknown feature view type: {other}"),
            ));
        }
    })
}

/// Feast's `ConflictingFeatureViewNames` for a name used by two view kinds.
pub fn conflicting_view_names(name: &str, existing: ObjectKind, new: ObjectKind) -> FeastError {
    FeastError::new(
        ErrorClass::ConflictingFeatureViewNames,
        format!(
            "Feature view name '{name}' is already used by a {}. Cannot register a {} with the same name. \
             Feature view names must be unique across FeatureView, StreamFeatureView, and OnDemandFeatureView.",
            existing.class_name(),
            new.class_name()
        ),
    )
}

/// Feast's `has_all_tags`: every requested tag must be present with the same value.
pub fn has_all_tags(
    object_tags: &BTreeMap<String, String>,
    requested: &BTreeMap<String, String>,
) -> bool {
    requested.iter().all(|(k, v)| object_tags.get(k) == Some(v))
}

fn version_record(
    name: &str,
    project: &str,
    version_number: i32,
    kind: &str,
    proto: Vec<u8>,
    now: Timestamp,
) -> core::FeatureViewVersionRecord {
    core::FeatureViewVersionRecord {
        feature_view_name: name.to_owned(),
        project_id: project.to_owned(),
        version_number,
        feature_view_type: kind.to_owned(),
        feature_view_proto: proto,
        created_timestamp: Some(now),
        description: String::new(),
        version_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// What makes a new feature-view version (Feast's `_schema_or_udf_changed`): the features,
/// and for the kinds that have them the entities, entity columns and transformation source.
fn version_fingerprint<T: RegistryObject>(object: &T) -> Option<(&'static str, Vec<Vec<u8>>)> {
    use std::any::Any;
    fn sorted<M: Message>(items: &[M]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = items.iter().map(Message::encode_to_vec).collect();
        out.sort();
        out
    }
    fn names(items: &[String]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = items.iter().map(|s| s.as_bytes().to_vec()).collect();
        out.sort();
        out
    }
    let any: &dyn Any = object;
    let sep = || vec![b"|".to_vec()];
    if let Some(spec) = any
        .downcast_ref::<core::FeatureView>()
        .and_then(|v| v.spec.as_ref())
    {
        let parts = [
            sorted(&spec.features),
            sep(),
            names(&spec.entities),
            sep(),
            sorted(&spec.entity_columns),
            sep(),
            sorted(&spec.source_views),
        ];
        return Some(("feature_view", parts.concat()));
    }
    if let Some(spec) = any
        .downcast_ref::<core::StreamFeatureView>()
        .and_then(|v| v.spec.as_ref())
    {
        let parts = [
            sorted(&spec.features),
            sep(),
            names(&spec.entities),
            sep(),
            sorted(&spec.entity_columns),
        ];
        return Some(("stream_feature_view", parts.concat()));
    }
    if let Some(spec) = any
        .downcast_ref::<core::OnDemandFeatureView>()
        .and_then(|v| v.spec.as_ref())
    {
        let udf = match spec
            .feature_transformation
            .as_ref()
            .and_then(|t| t.transformation.as_ref())
        {
            Some(core::feature_transformation_v2::Transformation::UserDefinedFunction(u)) => {
                u.body_text.clone().into_bytes()
            }
            Some(core::feature_transformation_v2::Transformation::SubstraitTransformation(t)) => {
                t.encode_to_vec()
            }
            None => Vec::new(),
        };
        return Some((
            "on_demand_feature_view",
            [sorted(&spec.features), sep(), vec![udf]].concat(),
        ));
    }
    if let Some(spec) = any
        .downcast_ref::<core::LabelView>()
        .and_then(|v| v.spec.as_ref())
    {
        let parts = [
            sorted(&spec.features),
            sep(),
            names(&spec.entities),
            sep(),
            sorted(&spec.entity_columns),
        ];
        return Some(("label_view", parts.concat()));
    }
    None
}

/// The `spec.version` a feature-view kind declares.
fn spec_version<T: RegistryObject>(object: &T) -> Option<&str> {
    use std::any::Any;
    let any: &dyn Any = object;
    if let Some(v) = any.downcast_ref::<core::FeatureView>() {
        return v.spec.as_ref().map(|s| s.version.as_str());
    }
    if let Some(v) = any.downcast_ref::<core::StreamFeatureView>() {
        return v.spec.as_ref().map(|s| s.version.as_str());
    }
    if let Some(v) = any.downcast_ref::<core::OnDemandFeatureView>() {
        return v.spec.as_ref().map(|s| s.version.as_str());
    }
    None
}

fn set_spec_version<T: RegistryObject>(object: &mut T, version: &str) {
    use std::any::Any;
    let any: &mut dyn Any = object;
    if let Some(v) = any.downcast_mut::<core::FeatureView>() {
        v.spec.get_or_insert_with(Default::default).version = version.to_owned();
    } else if let Some(v) = any.downcast_mut::<core::StreamFeatureView>() {
        v.spec.get_or_insert_with(Default::default).version = version.to_owned();
    } else if let Some(v) = any.downcast_mut::<core::OnDemandFeatureView>() {
        v.spec.get_or_insert_with(Default::default).version = version.to_owned();
    }
}

/// Sets `meta.current_version_number` on the view kinds that carry it.
fn set_current_version<T: RegistryObject>(object: &mut T, version: i32) {
    use std::any::Any;
    let any: &mut dyn Any = object;
    if let Some(v) = any.downcast_mut::<core::FeatureView>() {
        v.meta
            .get_or_insert_with(Default::default)
            .current_version_number = version;
    } else if let Some(v) = any.downcast_mut::<core::StreamFeatureView>() {
        v.meta
            .get_or_insert_with(Default::default)
            .current_version_number = version;
    } else if let Some(v) = any.downcast_mut::<core::OnDemandFeatureView>() {
        v.meta
            .get_or_insert_with(Default::default)
            .current_version_number = version;
    }
}

/// Keeps what the server owns (materialization intervals, version, and the lifecycle state
/// unless the new object sets one) when a feature view or stream feature view is
/// re-applied.
fn carry_server_state<T: RegistryObject>(existing: &T, new: &mut T) {
    use std::any::Any;
    fn view_meta(o: &dyn Any) -> Option<&core::FeatureViewMeta> {
        o.downcast_ref::<core::FeatureView>()
            .and_then(|v| v.meta.as_ref())
            .or_else(|| {
                o.downcast_ref::<core::StreamFeatureView>()
                    .and_then(|v| v.meta.as_ref())
            })
    }
    fn view_meta_mut(o: &mut dyn Any) -> Option<&mut core::FeatureViewMeta> {
        if o.is::<core::FeatureView>() {
            o.downcast_mut::<core::FeatureView>()
                .and_then(|v| v.meta.as_mut())
        } else {
            o.downcast_mut::<core::StreamFeatureView>()
                .and_then(|v| v.meta.as_mut())
        }
    }
    if let (Some(old), Some(new)) = (view_meta(existing), view_meta_mut(new)) {
        new.materialization_intervals = old.materialization_intervals.clone();
        new.current_version_number = old.current_version_number;
        new.version_id = old.version_id.clone();
        // A lifecycle state the caller sets is applied (Feast's materialize flips a view
        // to MATERIALIZING this way); an unspecified one keeps the stored state, so a
        // plain `apply` does not reset AVAILABLE_ONLINE.
        if new.state == core::FeatureViewState::StateUnspecified as i32 {
            new.state = old.state;
        }
    }
}
