//! `plan`: the difference between a project in the registry and its declared definitions,
//! computed and printed the way `feast plan` / `feast apply` do, and applied in one step.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use feast_proto::core;
use prost_reflect::{DynamicMessage, ReflectMessage};
use prost_types::Timestamp;

use super::Catalog;
use crate::error::FeastError;
use crate::model::{DUMMY_ENTITY_NAME, ObjectKind, RegistryObject, message_descriptor};

/// Everything a feature repository declares for one project.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub project: core::Project,
    pub data_sources: Vec<core::DataSource>,
    pub entities: Vec<core::Entity>,
    pub feature_views: Vec<core::FeatureView>,
    pub on_demand_feature_views: Vec<core::OnDemandFeatureView>,
    pub stream_feature_views: Vec<core::StreamFeatureView>,
    pub label_views: Vec<core::LabelView>,
    pub feature_services: Vec<core::FeatureService>,
    pub permissions: Vec<core::Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Create,
    Update,
    Delete,
    Unchanged,
}

/// One changed property of an updated object, values rendered as protobuf JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyDiff {
    pub property: String,
    pub existing: String,
    pub declared: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    pub kind: ObjectKind,
    pub name: String,
    pub transition: Transition,
    pub properties: Vec<PropertyDiff>,
}

/// The plan: one entry per declared or registered object, kinds in Feast's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryDiff {
    pub objects: Vec<ObjectDiff>,
}

impl RegistryDiff {
    /// True when applying the plan would change the registry.
    pub fn has_changes(&self) -> bool {
        self.objects
            .iter()
            .any(|o| o.transition != Transition::Unchanged)
    }

    /// Objects of a transition type (for tests and summaries).
    pub fn names(&self, transition: Transition) -> Vec<(ObjectKind, &str)> {
        self.objects
            .iter()
            .filter(|o| o.transition == transition)
            .map(|o| (o.kind, o.name.as_str()))
            .collect()
    }

    /// Feast's `RegistryDiff.to_string()`: one line per created/updated/deleted object
    /// (data sources and the dummy entity are not listed), property changes indented, or
    /// "No changes to registry". `color` adds Feast's ANSI styling.
    pub fn render(&self, color: bool) -> String {
        const BRIGHT: &str = "\x1b[1m";
        const RESET: &str = "\x1b[0m";
        let paint = |code: &str, text: &str| {
            if color {
                format!("{BRIGHT}{code}{text}{RESET}")
            } else {
                text.to_owned()
            }
        };
        let mut out = String::new();
        for o in &self.objects {
            if o.transition == Transition::Unchanged
                || o.kind == ObjectKind::DataSource
                || o.name == DUMMY_ENTITY_NAME
            {
                continue;
            }
            let (action, code) = match o.transition {
                Transition::Create => ("Created", "\x1b[32m"),
                Transition::Delete => ("Deleted", "\x1b[31m"),
                Transition::Update => ("Updated", "\x1b[33m"),
                Transition::Unchanged => unreachable!("skipped above"),
            };
            let _ = writeln!(out, "{action} {} {}", o.kind, paint(code, &o.name));
            for p in &o.properties {
                let _ = writeln!(
                    out,
                    "\t{}: {} -> {}",
                    p.property,
                    paint(code, &p.existing),
                    paint("\x1b[92m", &p.declared)
                );
            }
        }
        if out.is_empty() {
            out = paint("\x1b[94m", "No changes to registry");
            out.push('\n');
        }
        out
    }
}

/// Compares the registered objects of `project` with the declared ones.
pub fn diff(catalog: &Catalog, project: &str, desired: &DesiredState) -> RegistryDiff {
    let mut out = RegistryDiff::default();
    let no_tags = BTreeMap::new();
    let registered_project: Vec<&core::Project> = catalog
        .projects(&no_tags)
        .filter(|p| p.name() == project)
        .collect();
    diff_kind(
        &mut out,
        registered_project,
        std::slice::from_ref(&desired.project),
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.data_sources,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.entities,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.feature_views,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.on_demand_feature_views,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.stream_feature_views,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.label_views,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.feature_services,
    );
    diff_kind(
        &mut out,
        catalog.list(project, &no_tags).collect(),
        &desired.permissions,
    );
    out
}

fn diff_kind<T: RegistryObject>(out: &mut RegistryDiff, registered: Vec<&T>, declared: &[T]) {
    let mut entries: Vec<ObjectDiff> = Vec::new();
    for new in declared {
        let entry = match registered.iter().find(|r| r.name() == new.name()) {
            None => ObjectDiff {
                kind: T::KIND,
                name: new.name().to_owned(),
                transition: Transition::Create,
                properties: vec![],
            },
            Some(current) => {
                let properties = property_diffs(*current, new);
                ObjectDiff {
                    kind: T::KIND,
                    name: new.name().to_owned(),
                    transition: if properties.is_empty() {
                        Transition::Unchanged
                    } else {
                        Transition::Update
                    },
                    properties,
                }
            }
        };
        entries.push(entry);
    }
    for current in registered {
        if !declared.iter().any(|d| d.name() == current.name()) {
            entries.push(ObjectDiff {
                kind: T::KIND,
                name: current.name().to_owned(),
                transition: Transition::Delete,
                properties: vec![],
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    out.objects.extend(entries);
}

/// Field-by-field differences of the declared parts of two objects (the `spec` for most
/// kinds), ignoring `project` and server-managed metadata.
fn property_diffs<T: RegistryObject>(current: &T, new: &T) -> Vec<PropertyDiff> {
    let (current, new) = (current.declared(), new.declared());
    if current == new {
        return vec![];
    }
    let Some(descriptor) = message_descriptor::<T>() else {
        return vec![PropertyDiff {
            property: "definition".into(),
            existing: String::new(),
            declared: String::new(),
        }];
    };
    let decode = |m: &T| {
        DynamicMessage::decode(
            descriptor.clone(),
            prost::Message::encode_to_vec(m).as_slice(),
        )
    };
    let (Ok(current), Ok(new)) = (decode(&current), decode(&new)) else {
        return vec![];
    };
    // Objects with a `spec` are compared inside it, as Feast does.
    let (current, new) = match (spec_of(&current), spec_of(&new)) {
        (Some(c), Some(n)) => (c, n),
        _ => (current, new),
    };
    let mut diffs = Vec::new();
    for field in current.descriptor().fields() {
        let (a, b) = (current.get_field(&field), new.get_field(&field));
        if a != b {
            diffs.push(PropertyDiff {
                property: field.name().to_owned(),
                existing: render_field(&current, field.name()),
                declared: render_field(&new, field.name()),
            });
        }
    }
    diffs
}

fn spec_of(message: &DynamicMessage) -> Option<DynamicMessage> {
    let field = message.descriptor().get_field_by_name("spec")?;
    match message.get_field(&field).into_owned() {
        prost_reflect::Value::Message(m) => Some(m),
        _ => None,
    }
}

/// One field's value as compact protobuf JSON (or `""`/`[]`/`{}` when unset).
fn render_field(message: &DynamicMessage, name: &str) -> String {
    let mut only = DynamicMessage::new(message.descriptor());
    if let Some(field) = message.descriptor().get_field_by_name(name) {
        only.set_field(&field, message.get_field(&field).into_owned());
    }
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut buf);
    if only.serialize_with_options(&mut ser, &options).is_err() {
        return String::new();
    }
    let json: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_default();
    match json.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Applies a plan: deletions first (so a name can move between view kinds), then creations
/// and updates. Unchanged objects are not touched (their `last_updated` stays).
pub fn apply_diff(
    catalog: &mut Catalog,
    project: &str,
    desired: &DesiredState,
    plan: &RegistryDiff,
    now: Timestamp,
) -> Result<(), FeastError> {
    for o in plan
        .objects
        .iter()
        .filter(|o| o.transition == Transition::Delete)
    {
        match o.kind {
            ObjectKind::Project => {}
            ObjectKind::DataSource => drop(catalog.delete::<core::DataSource>(&o.name, project)?),
            ObjectKind::Entity => drop(catalog.delete::<core::Entity>(&o.name, project)?),
            ObjectKind::FeatureService => {
                drop(catalog.delete::<core::FeatureService>(&o.name, project)?)
            }
            ObjectKind::Permission => drop(catalog.delete::<core::Permission>(&o.name, project)?),
            k if k.is_feature_view() => drop(catalog.delete_any_feature_view(&o.name, project)?),
            _ => {}
        }
    }
    let changed = |kind: ObjectKind, name: &str| {
        plan.objects.iter().any(|o| {
            o.kind == kind
                && o.name == name
                && matches!(o.transition, Transition::Create | Transition::Update)
        })
    };
    apply_changed(
        catalog,
        project,
        std::slice::from_ref(&desired.project),
        &changed,
        now,
    )?;
    apply_changed(catalog, project, &desired.data_sources, &changed, now)?;
    apply_changed(catalog, project, &desired.entities, &changed, now)?;
    apply_changed(catalog, project, &desired.feature_views, &changed, now)?;
    apply_changed(
        catalog,
        project,
        &desired.on_demand_feature_views,
        &changed,
        now,
    )?;
    apply_changed(
        catalog,
        project,
        &desired.stream_feature_views,
        &changed,
        now,
    )?;
    apply_changed(catalog, project, &desired.label_views, &changed, now)?;
    apply_changed(catalog, project, &desired.feature_services, &changed, now)?;
    apply_changed(catalog, project, &desired.permissions, &changed, now)?;
    Ok(())
}

fn apply_changed<T: RegistryObject>(
    catalog: &mut Catalog,
    project: &str,
    objects: &[T],
    changed: &dyn Fn(ObjectKind, &str) -> bool,
    now: Timestamp,
) -> Result<(), FeastError> {
    for o in objects.iter().filter(|o| changed(T::KIND, o.name())) {
        let mut object = o.clone();
        if T::KIND != ObjectKind::DataSource {
            copy_registered_source_meta(catalog, project, &mut object);
        }
        catalog.apply(object, project, now)?;
    }
    Ok(())
}

/// Gives every data source embedded in `object` the metadata of the registered source of
/// the same name, as Feast's objects share one Python source object: a view written by
/// feast-rs then compares equal in Feast's own `plan`.
fn copy_registered_source_meta<T: RegistryObject>(
    catalog: &Catalog,
    project: &str,
    object: &mut T,
) {
    crate::model::for_each_data_source(object, &mut |source| {
        if let Ok(registered) = catalog.get::<core::DataSource>(&source.name, project) {
            source.meta = registered.meta;
        }
    });
}
