//! Registry lineage as Feast 0.67's registry server computes it (`GetRegistryLineage`,
//! `GetObjectRelationships`): which object feeds which, as `(source, target)` pairs of
//! `{type, name}` references.
//!
//! Feast derives lineage from the objects it *lists* for a project (feature services,
//! feature views, on-demand views, stream views, label views; saved datasets are not
//! listed, so they never take part), after a round trip through its Python classes. The
//! functions here read the stored protos and reproduce what that round trip yields.
//!
//! Direct relationships, in Feast's order:
//! 1. view → feature service, for every projection of every service (`labelView` when the
//!    projection says so or a label view has that name, `featureView` otherwise);
//! 2. per feature view: entity → view, feature → view, batch source → view;
//! 3. per on-demand view: entity → view, feature → view (the view's type is `featureView`);
//! 4. per on-demand view: request source → view, source view → view;
//! 5. per stream feature view: stream source → view, batch source → view (its entities and
//!    features are not related);
//! 6. per label view: entity → label view, source → label view, the source's batch
//!    source → label view.
//!
//! Indirect relationships: everything that directly feeds a view of a feature service
//! (entities, features, sources, upstream views) → the service; then entity → data source
//! for each data source feeding a view the entity is related to.
//!
//! Everything here is independent of gRPC; the service only paginates the results.

use std::collections::HashMap;

use feast_core::model::RegistryObject;
use feast_core::registry::Catalog;
use feast_proto::core;
use feast_proto::registry::{EntityReference, EntityRelation};
use prost::Message;

/// Prefix of the request source Feast keeps for an on-demand view's `input_schema`; Feast
/// renames it to `<prefix><view name>` whenever it loads the view.
const INPUT_SCHEMA_SOURCE_PREFIX: &str = "__input_schema__";

/// The object types of Feast's lineage (`FeastObjectType`), with their wire strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    DataSource,
    Entity,
    FeatureView,
    LabelView,
    FeatureService,
    Feature,
    SavedDataset,
}

impl ObjectType {
    pub const ALL: [ObjectType; 7] = [
        ObjectType::DataSource,
        ObjectType::Entity,
        ObjectType::FeatureView,
        ObjectType::LabelView,
        ObjectType::FeatureService,
        ObjectType::Feature,
        ObjectType::SavedDataset,
    ];

    /// The string Feast puts in `EntityReference.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::DataSource => "dataSource",
            ObjectType::Entity => "entity",
            ObjectType::FeatureView => "featureView",
            ObjectType::LabelView => "labelView",
            ObjectType::FeatureService => "featureService",
            ObjectType::Feature => "feature",
            ObjectType::SavedDataset => "savedDataset",
        }
    }

    /// Parses a wire string exactly (case-sensitive), as `FeastObjectType(value)`.
    pub fn parse(value: &str) -> Result<Self, UnknownObjectType> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == value)
            .ok_or_else(|| UnknownObjectType(value.to_owned()))
    }
}

/// An object type string Feast does not know. The message is Python's `ValueError` text
/// for `FeastObjectType(value)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a valid FeastObjectType", python_str_repr(.0))]
pub struct UnknownObjectType(pub String);

/// One end of a relationship.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: ObjectType,
    pub name: String,
}

impl ObjectRef {
    fn new(kind: ObjectType, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }

    fn is(&self, object_type: &str, object_name: &str) -> bool {
        self.kind.as_str() == object_type && self.name == object_name
    }

    pub fn to_proto(&self) -> EntityReference {
        EntityReference {
            r#type: self.kind.as_str().to_owned(),
            name: self.name.clone(),
        }
    }
}

/// `source` feeds `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    pub source: ObjectRef,
    pub target: ObjectRef,
}

impl Relation {
    fn new(source: ObjectRef, target: ObjectRef) -> Self {
        Self { source, target }
    }

    /// True when either end is the object `object_type`/`object_name` (type compared as a
    /// string, so an unknown type matches nothing).
    pub fn involves(&self, object_type: &str, object_name: &str) -> bool {
        self.source.is(object_type, object_name) || self.target.is(object_type, object_name)
    }

    pub fn to_proto(&self) -> EntityRelation {
        EntityRelation {
            source: Some(self.source.to_proto()),
            target: Some(self.target.to_proto()),
        }
    }
}

/// The lineage of a project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    pub direct: Vec<Relation>,
    pub indirect: Vec<Relation>,
}

impl Lineage {
    /// `GetRegistryLineage`'s filter: only when both the type and the name are given are
    /// both lists narrowed to the relationships involving that object; a type alone (or a
    /// name alone) filters nothing.
    pub fn filtered(self, object_type: &str, object_name: &str) -> Lineage {
        if object_type.is_empty() || object_name.is_empty() {
            return self;
        }
        let keep = |rels: Vec<Relation>| -> Vec<Relation> {
            rels.into_iter()
                .filter(|r| r.involves(object_type, object_name))
                .collect()
        };
        Lineage {
            direct: keep(self.direct),
            indirect: keep(self.indirect),
        }
    }
}

/// Direct and indirect relationships of `project` (unknown projects have none).
pub fn registry_lineage(catalog: &Catalog, project: &str) -> Lineage {
    let direct = direct_relationships(catalog, project);
    let indirect = indirect_relationships(catalog, project, &direct);
    Lineage { direct, indirect }
}

/// `GetObjectRelationships`: the direct relationships (plus the indirect ones when asked)
/// that have the object at either end, in lineage order. `object_type` must be one of
/// Feast's type strings, even when nothing would match.
pub fn object_relationships(
    catalog: &Catalog,
    project: &str,
    object_type: &str,
    object_name: &str,
    include_indirect: bool,
) -> Result<Vec<Relation>, UnknownObjectType> {
    ObjectType::parse(object_type)?;
    let Lineage { direct, indirect } = registry_lineage(catalog, project);
    let mut all = direct;
    if include_indirect {
        all.extend(indirect);
    }
    all.retain(|r| r.involves(object_type, object_name));
    Ok(all)
}

fn direct_relationships(catalog: &Catalog, project: &str) -> Vec<Relation> {
    use ObjectType::*;
    let none = Default::default();
    let mut out = Vec::new();

    let label_view_names: Vec<&str> = catalog
        .list::<core::LabelView>(project, &none)
        .map(|v| v.name())
        .collect();
    for service in catalog.list::<core::FeatureService>(project, &none) {
        let Some(spec) = &service.spec else { continue };
        for projection in &spec.features {
            let view = projection.feature_view_name.as_str();
            let kind = if projection.view_type == "labelView" || label_view_names.contains(&view) {
                LabelView
            } else {
                FeatureView
            };
            out.push(Relation::new(
                ObjectRef::new(kind, view),
                ObjectRef::new(FeatureService, &spec.name),
            ));
        }
    }

    for view in catalog.list::<core::FeatureView>(project, &none) {
        let Some(spec) = &view.spec else { continue };
        let target = ObjectRef::new(FeatureView, &spec.name);
        for entity in &spec.entities {
            out.push(Relation::new(
                ObjectRef::new(Entity, entity),
                target.clone(),
            ));
        }
        for feature in &spec.features {
            out.push(Relation::new(
                ObjectRef::new(Feature, &feature.name),
                target.clone(),
            ));
        }
        out.push(Relation::new(
            ObjectRef::new(DataSource, batch_source_name(spec.batch_source.as_ref())),
            target,
        ));
    }

    let on_demand: Vec<&core::OnDemandFeatureView> = catalog
        .list::<core::OnDemandFeatureView>(project, &none)
        .collect();
    for view in &on_demand {
        let Some(spec) = &view.spec else { continue };
        let target = ObjectRef::new(FeatureView, &spec.name);
        for entity in &spec.entities {
            out.push(Relation::new(
                ObjectRef::new(Entity, entity),
                target.clone(),
            ));
        }
        for feature in &spec.features {
            out.push(Relation::new(
                ObjectRef::new(Feature, &feature.name),
                target.clone(),
            ));
        }
    }
    for view in &on_demand {
        let Some(spec) = &view.spec else { continue };
        let target = ObjectRef::new(FeatureView, &spec.name);
        for source in on_demand_sources(spec) {
            out.push(Relation::new(source, target.clone()));
        }
    }

    for view in catalog.list::<core::StreamFeatureView>(project, &none) {
        let Some(spec) = &view.spec else { continue };
        let target = ObjectRef::new(FeatureView, &spec.name);
        let stream = spec.stream_source.as_ref();
        // Feast's StreamFeatureView falls back to the stream source's batch source.
        let batch = spec
            .batch_source
            .as_ref()
            .or_else(|| stream.and_then(|s| s.batch_source.as_deref()));
        for source in [stream, batch].into_iter().flatten() {
            if !source.name.is_empty() {
                out.push(Relation::new(
                    ObjectRef::new(DataSource, &source.name),
                    target.clone(),
                ));
            }
        }
    }

    for view in catalog.list::<core::LabelView>(project, &none) {
        let Some(spec) = &view.spec else { continue };
        let target = ObjectRef::new(LabelView, &spec.name);
        for entity in &spec.entities {
            out.push(Relation::new(
                ObjectRef::new(Entity, entity),
                target.clone(),
            ));
        }
        if let Some(source) = &spec.source {
            let batch = source.batch_source.as_deref();
            for name in [Some(&source.name), batch.map(|b| &b.name)]
                .into_iter()
                .flatten()
            {
                if !name.is_empty() {
                    out.push(Relation::new(
                        ObjectRef::new(DataSource, name),
                        target.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// The data source name Feast relates a feature view's batch source by. Feast names an
/// unnamed source `unnamed_source_<Python hash of its text form>`: 0 for an absent or
/// empty source; otherwise Python's per-process string hash, which cannot be reproduced,
/// so a stable hash of the encoded source stands in for it.
fn batch_source_name(source: Option<&core::DataSource>) -> String {
    match source {
        Some(s) if !s.name.is_empty() => s.name.clone(),
        Some(s) if s.encoded_len() > 0 => {
            let hash = s
                .encode_to_vec()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
            format!("unnamed_source_{}", hash as i64)
        }
        _ => "unnamed_source_0".to_owned(),
    }
}

/// An on-demand view's sources as Feast sees them after loading the view: one per name
/// (a request source wins over a view of the same name), the `input_schema` source
/// renamed after the view, and nameless ones dropped.
fn on_demand_sources(spec: &core::OnDemandFeatureViewSpec) -> Vec<ObjectRef> {
    use feast_proto::core::on_demand_source::Source;
    let mut out: Vec<ObjectRef> = Vec::new();
    for source in spec.sources.values() {
        let found = match &source.source {
            Some(Source::FeatureView(v)) => ObjectRef::new(
                ObjectType::FeatureView,
                v.spec.as_ref().map(|s| s.name.as_str()).unwrap_or_default(),
            ),
            Some(Source::FeatureViewProjection(p)) => {
                ObjectRef::new(ObjectType::FeatureView, &p.feature_view_name)
            }
            Some(Source::RequestDataSource(d))
                if d.name.starts_with(INPUT_SCHEMA_SOURCE_PREFIX) =>
            {
                ObjectRef::new(
                    ObjectType::DataSource,
                    format!("{INPUT_SCHEMA_SOURCE_PREFIX}{}", spec.name),
                )
            }
            Some(Source::RequestDataSource(d)) => ObjectRef::new(ObjectType::DataSource, &d.name),
            None => continue,
        };
        match out.iter_mut().find(|r| r.name == found.name) {
            Some(existing) if found.kind == ObjectType::DataSource => *existing = found,
            Some(_) => {}
            None => out.push(found),
        }
    }
    out.retain(|r| !r.name.is_empty());
    out
}

fn indirect_relationships(catalog: &Catalog, project: &str, direct: &[Relation]) -> Vec<Relation> {
    use ObjectType::*;
    let none = Default::default();
    let is_view = |r: &ObjectRef| matches!(r.kind, FeatureView | LabelView);

    // Direct relationships into each view (by name, feature and label views alike), in order.
    let mut into_view: HashMap<&str, Vec<&Relation>> = HashMap::new();
    for rel in direct.iter().filter(|r| is_view(&r.target)) {
        into_view.entry(&rel.target.name).or_default().push(rel);
    }

    let mut out = Vec::new();
    for service in catalog.list::<core::FeatureService>(project, &none) {
        let Some(spec) = &service.spec else { continue };
        let target = ObjectRef::new(FeatureService, &spec.name);
        for projection in &spec.features {
            for rel in into_view
                .get(projection.feature_view_name.as_str())
                .into_iter()
                .flatten()
            {
                out.push(Relation::new(rel.source.clone(), target.clone()));
            }
        }
    }

    for rel in direct
        .iter()
        .filter(|r| r.source.kind == Entity && is_view(&r.target))
    {
        for source in into_view
            .get(rel.target.name.as_str())
            .into_iter()
            .flatten()
            .filter(|r| r.source.kind == DataSource)
        {
            out.push(Relation::new(
                rel.source.clone(),
                ObjectRef::new(DataSource, &source.source.name),
            ));
        }
    }
    out
}

/// What Feast's sorting sees of a relationship (`sort_by` is a dot path into its Python
/// dataclass, so `source.name`, `target.type` always exist, empty or not).
pub fn sort_view(relation: &EntityRelation) -> serde_json::Value {
    let end = |r: &Option<EntityReference>| {
        let r = r.clone().unwrap_or_default();
        serde_json::json!({"type": r.r#type, "name": r.name})
    };
    serde_json::json!({"source": end(&relation.source), "target": end(&relation.target)})
}

/// Python's `repr()` of a string (for error messages Feast builds with `!r`): single
/// quotes unless the text has a single quote and no double quote; backslashes, the quote
/// and control characters escaped.
pub fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use feast_proto::core;
    use feast_proto::core::on_demand_source::Source;

    const P: &str = "proj";

    fn source(name: &str, batch: Option<core::DataSource>) -> core::DataSource {
        core::DataSource {
            name: name.into(),
            project: P.into(),
            batch_source: batch.map(Box::new),
            ..Default::default()
        }
    }

    fn features(names: &[&str]) -> Vec<core::FeatureSpecV2> {
        names
            .iter()
            .map(|n| core::FeatureSpecV2 {
                name: (*n).into(),
                ..Default::default()
            })
            .collect()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn view(
        name: &str,
        project: &str,
        entities: &[&str],
        feats: &[&str],
        batch: Option<core::DataSource>,
        stream: Option<core::DataSource>,
    ) -> core::FeatureView {
        core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: name.into(),
                project: project.into(),
                entities: strings(entities),
                features: features(feats),
                batch_source: batch,
                stream_source: stream,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn projection(view: &str, view_type: &str) -> core::FeatureViewProjection {
        core::FeatureViewProjection {
            feature_view_name: view.into(),
            view_type: view_type.into(),
            ..Default::default()
        }
    }

    fn service(name: &str, project: &str, views: &[(&str, &str)]) -> core::FeatureService {
        core::FeatureService {
            spec: Some(core::FeatureServiceSpec {
                name: name.into(),
                project: project.into(),
                features: views.iter().map(|(v, t)| projection(v, t)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn on_demand(
        name: &str,
        entities: &[&str],
        feats: &[&str],
        sources: Vec<(&str, Source)>,
    ) -> core::OnDemandFeatureView {
        core::OnDemandFeatureView {
            spec: Some(core::OnDemandFeatureViewSpec {
                name: name.into(),
                project: P.into(),
                entities: strings(entities),
                features: features(feats),
                sources: sources
                    .into_iter()
                    .map(|(k, s)| (k.to_owned(), core::OnDemandSource { source: Some(s) }))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn request(name: &str) -> Source {
        Source::RequestDataSource(source(name, None))
    }

    /// A project with every kind lineage looks at, plus a saved dataset and an object of
    /// another project.
    fn catalog() -> Catalog {
        let batch = source("driver_src", None);
        let push = source("driver_push", Some(batch.clone()));
        let kafka = source("driver_kafka", Some(batch.clone()));
        let registry = core::Registry {
            entities: ["driver", "customer"]
                .iter()
                .map(|n| core::Entity {
                    spec: Some(core::EntitySpecV2 {
                        name: (*n).into(),
                        project: P.into(),
                        ..Default::default()
                    }),
                    meta: None,
                })
                .collect(),
            data_sources: vec![
                batch.clone(),
                push.clone(),
                kafka.clone(),
                source("vals", None),
            ],
            feature_views: vec![
                view(
                    "stats",
                    P,
                    &["driver"],
                    &["conv", "acc"],
                    Some(batch.clone()),
                    None,
                ),
                // A push-fed view: Feast relates only its batch source.
                view(
                    "fresh",
                    P,
                    &["driver", "customer"],
                    &["conv"],
                    Some(batch.clone()),
                    Some(push.clone()),
                ),
                view("sourceless", P, &[], &["x"], None, None),
                view(
                    "elsewhere",
                    "other",
                    &["driver"],
                    &["y"],
                    Some(batch.clone()),
                    None,
                ),
            ],
            on_demand_feature_views: vec![on_demand(
                "plus",
                &["__dummy"],
                &["conv_plus"],
                vec![
                    (
                        "stats",
                        Source::FeatureViewProjection(projection("stats", "")),
                    ),
                    ("vals", request("vals")),
                    (
                        "__input_schema__renamed_view",
                        request("__input_schema__renamed_view"),
                    ),
                ],
            )],
            stream_feature_views: vec![core::StreamFeatureView {
                spec: Some(core::StreamFeatureViewSpec {
                    name: "streamed".into(),
                    project: P.into(),
                    entities: strings(&["driver"]),
                    features: features(&["trips"]),
                    stream_source: Some(kafka),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            label_views: vec![core::LabelView {
                spec: Some(core::LabelViewSpec {
                    name: "labels".into(),
                    project: P.into(),
                    entities: strings(&["driver"]),
                    features: features(&["is_fraud"]),
                    source: Some(push),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            feature_services: vec![
                service(
                    "svc",
                    P,
                    &[("stats", ""), ("plus", "featureView"), ("labels", "")],
                ),
                service("other_svc", "other", &[("elsewhere", "")]),
            ],
            saved_datasets: vec![core::SavedDataset {
                spec: Some(core::SavedDatasetSpec {
                    name: "training".into(),
                    project: P.into(),
                    features: strings(&["stats:conv"]),
                    feature_service_name: "svc".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        Catalog::from_proto(registry)
    }

    fn tuples(rels: &[Relation]) -> Vec<(&str, &str, &str, &str)> {
        rels.iter()
            .map(|r| {
                (
                    r.source.kind.as_str(),
                    r.source.name.as_str(),
                    r.target.kind.as_str(),
                    r.target.name.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn direct_relationships_in_feast_order() {
        let lineage = registry_lineage(&catalog(), P);
        assert_eq!(
            tuples(&lineage.direct),
            vec![
                ("featureView", "stats", "featureService", "svc"),
                ("featureView", "plus", "featureService", "svc"),
                ("labelView", "labels", "featureService", "svc"),
                ("entity", "driver", "featureView", "stats"),
                ("feature", "conv", "featureView", "stats"),
                ("feature", "acc", "featureView", "stats"),
                ("dataSource", "driver_src", "featureView", "stats"),
                ("entity", "driver", "featureView", "fresh"),
                ("entity", "customer", "featureView", "fresh"),
                ("feature", "conv", "featureView", "fresh"),
                ("dataSource", "driver_src", "featureView", "fresh"),
                ("feature", "x", "featureView", "sourceless"),
                (
                    "dataSource",
                    "unnamed_source_0",
                    "featureView",
                    "sourceless"
                ),
                ("entity", "__dummy", "featureView", "plus"),
                ("feature", "conv_plus", "featureView", "plus"),
                // Sources in map order; the input-schema source is renamed after its view.
                ("dataSource", "__input_schema__plus", "featureView", "plus"),
                ("featureView", "stats", "featureView", "plus"),
                ("dataSource", "vals", "featureView", "plus"),
                ("dataSource", "driver_kafka", "featureView", "streamed"),
                ("dataSource", "driver_src", "featureView", "streamed"),
                ("entity", "driver", "labelView", "labels"),
                ("dataSource", "driver_push", "labelView", "labels"),
                ("dataSource", "driver_src", "labelView", "labels"),
            ]
        );
    }

    #[test]
    fn indirect_relationships_through_views() {
        let lineage = registry_lineage(&catalog(), P);
        assert_eq!(
            tuples(&lineage.indirect),
            vec![
                // Everything feeding `stats`, then `plus`, then `labels` → the service.
                ("entity", "driver", "featureService", "svc"),
                ("feature", "conv", "featureService", "svc"),
                ("feature", "acc", "featureService", "svc"),
                ("dataSource", "driver_src", "featureService", "svc"),
                ("entity", "__dummy", "featureService", "svc"),
                ("feature", "conv_plus", "featureService", "svc"),
                (
                    "dataSource",
                    "__input_schema__plus",
                    "featureService",
                    "svc"
                ),
                ("featureView", "stats", "featureService", "svc"),
                ("dataSource", "vals", "featureService", "svc"),
                ("entity", "driver", "featureService", "svc"),
                ("dataSource", "driver_push", "featureService", "svc"),
                ("dataSource", "driver_src", "featureService", "svc"),
                // Entity → each source of each view it feeds (duplicates kept, as Feast).
                ("entity", "driver", "dataSource", "driver_src"),
                ("entity", "driver", "dataSource", "driver_src"),
                ("entity", "customer", "dataSource", "driver_src"),
                ("entity", "__dummy", "dataSource", "__input_schema__plus"),
                ("entity", "__dummy", "dataSource", "vals"),
                ("entity", "driver", "dataSource", "driver_push"),
                ("entity", "driver", "dataSource", "driver_src"),
            ]
        );
    }

    #[test]
    fn saved_datasets_and_other_projects_take_no_part() {
        let lineage = registry_lineage(&catalog(), P);
        let all: Vec<_> = lineage.direct.iter().chain(&lineage.indirect).collect();
        assert!(all.iter().all(|r| r.source.kind != ObjectType::SavedDataset
            && r.target.kind != ObjectType::SavedDataset));
        assert!(!all.iter().any(|r| r.involves("featureView", "elsewhere")));

        let other = registry_lineage(&catalog(), "other");
        assert_eq!(
            tuples(&other.direct),
            vec![
                ("featureView", "elsewhere", "featureService", "other_svc"),
                ("entity", "driver", "featureView", "elsewhere"),
                ("feature", "y", "featureView", "elsewhere"),
                ("dataSource", "driver_src", "featureView", "elsewhere"),
            ]
        );
        assert_eq!(registry_lineage(&catalog(), "missing"), Lineage::default());
    }

    #[test]
    fn lineage_filter_needs_type_and_name() {
        let full = registry_lineage(&catalog(), P);
        assert_eq!(full.clone().filtered("featureView", ""), full);
        assert_eq!(full.clone().filtered("", "stats"), full);

        let stats = full.clone().filtered("featureView", "stats");
        assert_eq!(
            tuples(&stats.direct),
            vec![
                ("featureView", "stats", "featureService", "svc"),
                ("entity", "driver", "featureView", "stats"),
                ("feature", "conv", "featureView", "stats"),
                ("feature", "acc", "featureView", "stats"),
                ("dataSource", "driver_src", "featureView", "stats"),
                ("featureView", "stats", "featureView", "plus"),
            ]
        );
        assert_eq!(
            tuples(&stats.indirect),
            vec![("featureView", "stats", "featureService", "svc")]
        );
        // An unknown type is no error here; it matches nothing.
        assert_eq!(full.filtered("view", "stats"), Lineage::default());
    }

    #[test]
    fn object_relationships_with_and_without_indirect() {
        let catalog = catalog();
        let direct = object_relationships(&catalog, P, "entity", "customer", false).unwrap();
        assert_eq!(
            tuples(&direct),
            vec![("entity", "customer", "featureView", "fresh")]
        );
        let all = object_relationships(&catalog, P, "entity", "customer", true).unwrap();
        assert_eq!(
            tuples(&all),
            vec![
                ("entity", "customer", "featureView", "fresh"),
                ("entity", "customer", "dataSource", "driver_src"),
            ]
        );
        let service = object_relationships(&catalog, P, "featureService", "svc", false).unwrap();
        assert_eq!(service.len(), 3);
        assert_eq!(
            object_relationships(&catalog, P, "featureService", "svc", true)
                .unwrap()
                .len(),
            15
        );
        assert!(
            object_relationships(&catalog, P, "savedDataset", "training", true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_object_type_is_pythons_value_error() {
        let err = object_relationships(&catalog(), P, "FeatureView", "stats", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'FeatureView' is not a valid FeastObjectType"
        );
        let err = object_relationships(&catalog(), "missing", "", "", false).unwrap_err();
        assert_eq!(err.to_string(), "'' is not a valid FeastObjectType");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("a'\"b\\\n"), "'a\\'\"b\\\\\\n'");
        assert_eq!(python_str_repr("\u{1}é"), "'\\x01é'");
    }

    #[test]
    fn on_demand_sources_dedupe_by_name_and_prefer_request_sources() {
        let view = on_demand(
            "odfv",
            &[],
            &[],
            vec![
                ("a", Source::FeatureViewProjection(projection("stats", ""))),
                (
                    "b",
                    Source::FeatureView(view("stats", P, &[], &[], None, None)),
                ),
                (
                    "c",
                    Source::FeatureView(view("shared", P, &[], &[], None, None)),
                ),
                ("d", request("shared")),
                ("e", request("")),
            ],
        );
        let refs = on_demand_sources(view.spec.as_ref().unwrap());
        assert_eq!(
            refs,
            vec![
                ObjectRef::new(ObjectType::FeatureView, "stats"),
                ObjectRef::new(ObjectType::DataSource, "shared"),
            ]
        );
    }

    #[test]
    fn unnamed_batch_sources() {
        assert_eq!(batch_source_name(None), "unnamed_source_0");
        assert_eq!(
            batch_source_name(Some(&core::DataSource::default())),
            "unnamed_source_0"
        );
        let unnamed = core::DataSource {
            timestamp_field: "ts".into(),
            ..Default::default()
        };
        let name = batch_source_name(Some(&unnamed));
        assert!(name.starts_with("unnamed_source_") && name != "unnamed_source_0");
        assert_eq!(name, batch_source_name(Some(&unnamed)));
    }

    #[test]
    fn sort_view_has_every_attribute_even_when_empty() {
        let rel = Relation::new(
            ObjectRef::new(ObjectType::Entity, ""),
            ObjectRef::new(ObjectType::FeatureView, "v"),
        );
        assert_eq!(
            sort_view(&rel.to_proto()),
            serde_json::json!({
                "source": {"type": "entity", "name": ""},
                "target": {"type": "featureView", "name": "v"},
            })
        );
    }

    #[test]
    fn protos_carry_the_wire_strings() {
        let rel = Relation::new(
            ObjectRef::new(ObjectType::SavedDataset, "a"),
            ObjectRef::new(ObjectType::LabelView, "b"),
        );
        let proto = rel.to_proto();
        assert_eq!(proto.source.unwrap().r#type, "savedDataset");
        assert_eq!(proto.target.unwrap().r#type, "labelView");
        for t in ObjectType::ALL {
            assert_eq!(ObjectType::parse(t.as_str()), Ok(t));
        }
    }
}
