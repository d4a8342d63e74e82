//! Feast's permission engine (`security_manager.py`, `enforcer.py`, `matcher.py`,
//! `policy.py`, `decision.py`; PROTOCOLS.md §5.5) over the `Permission` protos of a project.
//!
//! Semantics kept from Feast, deliberately:
//! - A permission matches a resource when the resource's type is one of `types` *or a subclass*
//!   (a `FEATURE_VIEW` permission covers batch and stream feature views; on-demand and label
//!   views are not feature-view subclasses); empty `types` = every type.
//! - `name_patterns`: empty matches every name; otherwise any pattern must *full-match* the
//!   name (Python `re.fullmatch`; the Rust `regex` syntax has no look-around or back-references,
//!   and a pattern that does not compile matches nothing).
//! - every requested action must be among the permission's `actions`.
//! - AFFIRMATIVE decision: the first matching permission whose policy admits the user grants;
//!   the request is denied only when every matching permission denies, with all their
//!   explanations joined by `,`.
//! - No permissions in the project: any user with a name may do everything (unless
//!   [`Authorizer::strict`]); a resource no permission covers is denied.
//! - List filtering keeps Feast's `filter_only` quirks (see [`Authorizer::filter`]).
//!
//! One deliberate difference: `required_tags` are matched against the *resource's* tags, as
//! Feast's documentation describes. Feast 0.67's matcher looks for a `required_tags` attribute
//! on the resource, which only `Permission` objects have, so for every other resource it
//! ignores `required_tags` (with a warning). There is also no "intra-communication" user that
//! bypasses the checks (feast#6785).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use feast_core::error::{ErrorClass, FeastError};
use feast_core::model::{ObjectKind, RegistryObject};
use feast_proto::core::permission_spec::Type as PermissionType;
use feast_proto::core::policy::PolicyType;
use feast_proto::core::{DataSource, Permission};
use regex::Regex;

use crate::user::User;

/// The kinds of registry objects a `Permission` can protect (Feast's `ALL_RESOURCE_TYPES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Project,
    FeatureView,
    OnDemandFeatureView,
    BatchFeatureView,
    StreamFeatureView,
    LabelView,
    Entity,
    FeatureService,
    DataSource,
    ValidationReference,
    SavedDataset,
    Permission,
}

impl ResourceKind {
    /// The Python class Feast reports (`type(resource)`), module-qualified.
    pub fn python_class(self) -> &'static str {
        match self {
            Self::Project => "feast.project.Project",
            Self::FeatureView => "feast.feature_view.FeatureView",
            Self::OnDemandFeatureView => "feast.on_demand_feature_view.OnDemandFeatureView",
            Self::BatchFeatureView => "feast.batch_feature_view.BatchFeatureView",
            Self::StreamFeatureView => "feast.stream_feature_view.StreamFeatureView",
            Self::LabelView => "feast.labeling.label_view.LabelView",
            Self::Entity => "feast.entity.Entity",
            Self::FeatureService => "feast.feature_service.FeatureService",
            Self::DataSource => "feast.data_source.DataSource",
            Self::ValidationReference => "feast.saved_dataset.ValidationReference",
            Self::SavedDataset => "feast.saved_dataset.SavedDataset",
            Self::Permission => "feast.permissions.permission.Permission",
        }
    }

    /// `isinstance(resource, <type>)` for a `PermissionSpec.Type`.
    pub fn is_instance_of(self, t: PermissionType) -> bool {
        use PermissionType as T;
        match t {
            T::FeatureView => matches!(
                self,
                Self::FeatureView | Self::BatchFeatureView | Self::StreamFeatureView
            ),
            T::OnDemandFeatureView => self == Self::OnDemandFeatureView,
            T::BatchFeatureView => self == Self::BatchFeatureView,
            T::StreamFeatureView => self == Self::StreamFeatureView,
            T::Entity => self == Self::Entity,
            T::FeatureService => self == Self::FeatureService,
            T::DataSource => self == Self::DataSource,
            T::ValidationReference => self == Self::ValidationReference,
            T::SavedDataset => self == Self::SavedDataset,
            T::Permission => self == Self::Permission,
            T::Project => self == Self::Project,
            T::LabelView => self == Self::LabelView,
        }
    }
}

impl From<ObjectKind> for ResourceKind {
    fn from(k: ObjectKind) -> Self {
        match k {
            ObjectKind::Project => Self::Project,
            ObjectKind::DataSource => Self::DataSource,
            ObjectKind::Entity => Self::Entity,
            ObjectKind::FeatureView => Self::FeatureView,
            ObjectKind::OnDemandFeatureView => Self::OnDemandFeatureView,
            ObjectKind::StreamFeatureView => Self::StreamFeatureView,
            ObjectKind::LabelView => Self::LabelView,
            ObjectKind::FeatureService => Self::FeatureService,
            ObjectKind::Permission => Self::Permission,
            ObjectKind::SavedDataset => Self::SavedDataset,
            ObjectKind::ValidationReference => Self::ValidationReference,
        }
    }
}

/// The resource a request touches: what a permission is matched against.
#[derive(Debug, Clone, Copy)]
pub struct ResourceRef<'a> {
    pub kind: ResourceKind,
    pub name: &'a str,
    /// The resource's own tags (`spec.tags`), matched against `required_tags`.
    pub tags: Option<&'a BTreeMap<String, String>>,
    /// The concrete Python class when it is a subclass Feast would name instead of
    /// [`ResourceKind::python_class`] (data sources: `feast.infra.offline_stores.file_source.FileSource`, ...).
    pub python_class: Option<&'a str>,
}

impl<'a> ResourceRef<'a> {
    pub fn new(kind: ResourceKind, name: &'a str) -> Self {
        Self {
            kind,
            name,
            tags: None,
            python_class: None,
        }
    }

    /// The resource for a registry object: its kind, name and tags, and for a data source
    /// the concrete class it records (`data_source_class_type`).
    pub fn of<T: RegistryObject>(object: &'a T) -> Self {
        let mut r = Self::new(T::KIND.into(), object.name()).with_tags(object.tags());
        if let Some(ds) = (object as &dyn std::any::Any).downcast_ref::<DataSource>()
            && !ds.data_source_class_type.is_empty()
        {
            r.python_class = Some(&ds.data_source_class_type);
        }
        r
    }

    pub fn with_tags(mut self, tags: &'a BTreeMap<String, String>) -> Self {
        self.tags = Some(tags);
        self
    }

    pub fn with_python_class(mut self, class: &'a str) -> Self {
        self.python_class = Some(class);
        self
    }

    fn class_path(&self) -> &str {
        self.python_class.unwrap_or(self.kind.python_class())
    }

    fn class_name(&self) -> &str {
        let path = self.class_path();
        path.rsplit('.').next().unwrap_or(path)
    }
}

/// Feast's `AuthzedAction` (the proto enum), re-exported for callers.
pub use feast_proto::core::permission_spec::AuthzedAction as Action;

/// Python's `repr()` of a `str`: what Feast's messages show for names in lists.
fn py_repr_str(s: &str) -> String {
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
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a `list[str]`.
fn py_repr_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| py_repr_str(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// `AuthzedAction.value`: `"read_online"`.
pub fn action_value(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Describe => "describe",
        Action::Update => "update",
        Action::Delete => "delete",
        Action::ReadOnline => "read_online",
        Action::ReadOffline => "read_offline",
        Action::WriteOnline => "write_online",
        Action::WriteOffline => "write_offline",
    }
}

/// `repr(list[AuthzedAction])`: `[<AuthzedAction.DESCRIBE: 'describe'>]`.
fn py_repr_actions(actions: &[Action]) -> String {
    let inner: Vec<String> = actions
        .iter()
        .map(|a| {
            let v = action_value(*a);
            format!("<AuthzedAction.{}: '{v}'>", v.to_ascii_uppercase())
        })
        .collect();
    format!("[{}]", inner.join(", "))
}

/// `FeastPermissionError(details)`: message `"Permission error:\n{details}"`.
pub fn permission_error(details: impl AsRef<str>) -> FeastError {
    FeastError::new(
        ErrorClass::FeastPermissionError,
        format!("Permission error:\n{}", details.as_ref()),
    )
}

/// The permissions of `project` in `catalog`, what [`Authorizer::check`] weighs a request
/// against (services read them from their cached registry snapshot).
pub fn project_permissions(
    catalog: &feast_core::registry::Catalog,
    project: &str,
) -> Vec<Permission> {
    catalog
        .list::<Permission>(project, &BTreeMap::new())
        .cloned()
        .collect()
}

/// Feast's policy check: `(granted, explanation)`.
fn validate_user(permission: &Permission, user: &User) -> (bool, String) {
    let policy = permission
        .spec
        .as_ref()
        .and_then(|s| s.policy.as_ref())
        .and_then(|p| p.policy_type.as_ref());
    match policy {
        // An empty `Policy` is how `AllowAll` serializes.
        None => (true, String::new()),
        Some(PolicyType::RoleBasedPolicy(p)) => {
            let ok = user.has_matching_role(&p.roles);
            let why = if ok {
                String::new()
            } else {
                format!("Requires roles {}", py_repr_list(&p.roles))
            };
            (ok, why)
        }
        Some(PolicyType::GroupBasedPolicy(p)) => {
            let ok = user.has_matching_group(&p.groups);
            (
                ok,
                explain(ok, "User is not added into the permitted groups"),
            )
        }
        Some(PolicyType::NamespaceBasedPolicy(p)) => {
            let ok = user.has_matching_namespace(&p.namespaces);
            (
                ok,
                explain(ok, "User is not added into the permitted namespaces"),
            )
        }
        Some(PolicyType::CombinedGroupNamespacePolicy(p)) => {
            let ok =
                user.has_matching_group(&p.groups) || user.has_matching_namespace(&p.namespaces);
            (
                ok,
                explain(
                    ok,
                    "User must be in at least one of the permitted groups or namespaces",
                ),
            )
        }
    }
}

fn explain(ok: bool, why: &str) -> String {
    if ok { String::new() } else { why.to_owned() }
}

/// Evaluates Feast permissions. Cheap to share (`Arc`); keeps compiled name patterns.
#[derive(Debug, Default)]
pub struct Authorizer {
    strict: bool,
    /// Compiled `^(?:pattern)$` per pattern text; `None` = the pattern does not compile.
    patterns: RwLock<HashMap<String, Option<Arc<Regex>>>>,
}

/// The outcome for one resource during enforcement.
enum Verdict {
    Allow,
    /// Filtered out silently (`filter_only`).
    Skip,
}

impl Authorizer {
    /// Feast's defaults: with no permissions in the project, any named user may do everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locked down: with no permissions in the project, everything is denied.
    pub fn strict() -> Self {
        Self {
            strict: true,
            ..Self::default()
        }
    }

    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// `assert_permissions`: `Ok` when `user` may perform every one of `actions` on `resource`,
    /// else Feast's `FeastPermissionError`.
    pub fn check(
        &self,
        user: &User,
        permissions: &[Permission],
        resource: ResourceRef<'_>,
        actions: &[Action],
    ) -> Result<(), FeastError> {
        if self.no_permissions(user, permissions)?.is_some() {
            return Ok(());
        }
        self.enforce_one(user, permissions, &resource, actions, false)
            .map(|_| ())
    }

    /// `permitted_resources`: the resources `user` may perform `actions` on, in order.
    ///
    /// Feast's `filter_only` quirks are kept: a resource every matching permission denies is
    /// dropped only if the *last* of them has `name_patterns` (otherwise the whole call fails);
    /// a resource no permission matches is dropped only if some permission of its type has
    /// `name_patterns` (otherwise the whole call fails).
    pub fn filter<T>(
        &self,
        user: &User,
        permissions: &[Permission],
        resources: Vec<T>,
        resource_ref: impl Fn(&T) -> ResourceRef<'_>,
        actions: &[Action],
    ) -> Result<Vec<T>, FeastError> {
        if self.no_permissions(user, permissions)?.is_some() {
            return Ok(resources);
        }
        let mut out = Vec::with_capacity(resources.len());
        for r in resources {
            match self.enforce_one(user, permissions, &resource_ref(&r), actions, true)? {
                Verdict::Allow => out.push(r),
                Verdict::Skip => {}
            }
        }
        Ok(out)
    }

    /// `Some(())` when the project has no permissions and the user is let through.
    fn no_permissions(
        &self,
        user: &User,
        permissions: &[Permission],
    ) -> Result<Option<()>, FeastError> {
        if !permissions.is_empty() {
            return Ok(None);
        }
        if user.username.is_empty() {
            return Err(permission_error(
                "No permissions defined and no authenticated user context. Access denied.",
            ));
        }
        if self.strict {
            return Err(permission_error(
                "No permissions defined in this project and the server is in strict \
                 authorization mode. Access denied.",
            ));
        }
        // Feast warns on every request; once per process is enough to be seen, and keeps a
        // busy server's log (and latency) free of it.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                message = "No permissions defined in registry. All authenticated users are granted full access.",
                user = %user.username
            );
        }
        Ok(Some(()))
    }

    fn enforce_one(
        &self,
        user: &User,
        permissions: &[Permission],
        resource: &ResourceRef<'_>,
        actions: &[Action],
        filter_only: bool,
    ) -> Result<Verdict, FeastError> {
        let mut explanations: Vec<String> = Vec::new();
        let mut last_match: Option<&Permission> = None;
        for p in permissions {
            if !(self.match_resource(p, resource) && match_actions(p, actions)) {
                continue;
            }
            last_match = Some(p);
            let (granted, why) = validate_user(p, user);
            if granted {
                return Ok(Verdict::Allow);
            }
            let upper: Vec<String> = actions
                .iter()
                .map(|a| action_value(*a).to_ascii_uppercase())
                .collect();
            explanations.push(format!(
                "Permission {} denied execution of {} to {}:{}: {}",
                spec_name(p),
                py_repr_list(&upper),
                resource.class_name(),
                resource.name,
                why
            ));
        }
        if let Some(last) = last_match {
            if filter_only && has_name_patterns(last) {
                return Ok(Verdict::Skip);
            }
            tracing::info!(message = "Permission denied", user = %user.username, reasons = %explanations.join(","));
            return Err(permission_error(explanations.join(",")));
        }
        let no_match = || {
            permission_error(format!(
                "No permissions defined to manage {} on <class '{}'>/{}.",
                py_repr_actions(actions),
                resource.class_path(),
                resource.name
            ))
        };
        if !filter_only {
            return Err(no_match());
        }
        let mut of_type = permissions
            .iter()
            .filter(|p| types_match(p, resource.kind))
            .peekable();
        if of_type.peek().is_none() || !of_type.any(has_name_patterns) {
            return Err(no_match());
        }
        Ok(Verdict::Skip)
    }

    /// `Permission.match_resource`: type (with subclasses), name patterns, required tags.
    pub fn match_resource(&self, p: &Permission, resource: &ResourceRef<'_>) -> bool {
        let Some(spec) = p.spec.as_ref() else {
            return false;
        };
        if !types_match(p, resource.kind) {
            return false;
        }
        if !spec.name_patterns.is_empty()
            && !spec
                .name_patterns
                .iter()
                .any(|pat| self.full_match(pat, resource.name))
        {
            return false;
        }
        if !spec.required_tags.is_empty() {
            let empty = BTreeMap::new();
            let tags = resource.tags.unwrap_or(&empty);
            // Feast strips whitespace around tag keys and values when it builds a Permission.
            return spec
                .required_tags
                .iter()
                .all(|(k, v)| tags.get(k.trim()).map(|t| t.as_str()) == Some(v.trim()));
        }
        true
    }

    fn full_match(&self, pattern: &str, name: &str) -> bool {
        // Feast strips each pattern when it builds a Permission.
        let pattern = pattern.trim();
        if let Some(compiled) = self
            .patterns
            .read()
            .ok()
            .and_then(|m| m.get(pattern).cloned())
        {
            return compiled.is_some_and(|re| re.is_match(name));
        }
        let compiled = match Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => Some(Arc::new(re)),
            Err(error) => {
                tracing::warn!(message = "Permission name pattern does not compile; it matches nothing", pattern, %error);
                None
            }
        };
        let matched = compiled.as_ref().is_some_and(|re| re.is_match(name));
        if let Ok(mut m) = self.patterns.write() {
            m.insert(pattern.to_owned(), compiled);
        }
        matched
    }
}

fn spec_name(p: &Permission) -> &str {
    p.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn has_name_patterns(p: &Permission) -> bool {
    p.spec.as_ref().is_some_and(|s| !s.name_patterns.is_empty())
}

/// `isinstance(resource, tuple(p.types))`; empty `types` = all types. Unknown enum values
/// (a newer Feast) match nothing.
fn types_match(p: &Permission, kind: ResourceKind) -> bool {
    let Some(spec) = p.spec.as_ref() else {
        return false;
    };
    spec.types.is_empty()
        || spec
            .types
            .iter()
            .filter_map(|t| PermissionType::try_from(*t).ok())
            .any(|t| kind.is_instance_of(t))
}

/// `Permission.match_actions`: every requested action is allowed.
fn match_actions(p: &Permission, requested: &[Action]) -> bool {
    let Some(spec) = p.spec.as_ref() else {
        return false;
    };
    requested
        .iter()
        .all(|a| spec.actions.contains(&(*a as i32)))
}

/// Feast's `ALL_ACTIONS`, `READ`, `WRITE` and `CRUD` aliases.
pub mod actions {
    use super::Action;
    pub const ALL: &[Action] = &[
        Action::Create,
        Action::Describe,
        Action::Update,
        Action::Delete,
        Action::ReadOnline,
        Action::ReadOffline,
        Action::WriteOnline,
        Action::WriteOffline,
    ];
    pub const READ: &[Action] = &[Action::ReadOffline, Action::ReadOnline];
    pub const WRITE: &[Action] = &[Action::WriteOffline, Action::WriteOnline];
    pub const CRUD: &[Action] = &[
        Action::Create,
        Action::Describe,
        Action::Update,
        Action::Delete,
    ];
}
