//! Authorization of every registry RPC with Feast's `Permission` policies (PROTOCOLS.md §1.4,
//! §5.5). Authentication happens before, in the [`feast_auth::AuthLayer`] in front of the
//! whole server; each RPC then checks the authenticated [`User`] against the permissions of
//! the project it names, read from the live registry (committed plus staged), never from
//! storage per request.
//!
//! [`RPC_RULES`] is the table a reviewer reads: one row per RPC of
//! `feast.registry.RegistryServer`, and a test fails when the service has an RPC the table
//! does not name. The project whose permissions are checked is always the project whose
//! objects the RPC reads or writes: the request's `project` field, a project's own name for
//! project objects, and each project in turn for `Commit`, `ListProjects` and `Proto`
//! (Feast checks those three against the server's configured project, which lets one
//! tenant's permissions decide over another tenant's project).

use std::sync::Arc;

use feast_auth::{Action, Authorizer, ResourceKind, ResourceRef, User, permission_error};
use feast_core::error::FeastError;
use feast_core::model::RegistryObject;
use feast_core::registry::Catalog;
use feast_proto::core;

/// What each RPC requires. "D" = DESCRIBE. "filter D" = the list keeps what the caller may
/// DESCRIBE (Feast's `permitted_resources`, quirks included: a list can fail as a whole).
/// "upsert" = `[DESCRIBE, UPDATE]` on the stored object and on the new one, or `CREATE` on
/// the new one when nothing is stored under its name.
pub const RPC_RULES: &[(&str, &str)] = &[
    ("ApplyEntity", "upsert on the entity"),
    ("GetEntity", "D on the entity"),
    ("ListEntities", "filter D"),
    ("DeleteEntity", "DELETE on the stored entity"),
    ("ApplyDataSource", "upsert on the data source"),
    ("GetDataSource", "D on the data source"),
    ("ListDataSources", "filter D"),
    ("DeleteDataSource", "DELETE on the stored data source"),
    (
        "ApplyFeatureView",
        "upsert on the view (stored view of the same kind)",
    ),
    ("DeleteFeatureView", "DELETE on the stored view of any kind"),
    ("GetAnyFeatureView", "D on the view"),
    (
        "ListAllFeatureViews",
        "filter D; a feature_service filter needs D on the service",
    ),
    ("GetFeatureView", "D on the view"),
    ("ListFeatureViews", "filter D"),
    ("GetStreamFeatureView", "D on the view"),
    ("ListStreamFeatureViews", "filter D"),
    ("GetOnDemandFeatureView", "D on the view"),
    ("ListOnDemandFeatureViews", "filter D"),
    ("GetLabelView", "D on the view"),
    ("ListLabelViews", "filter D"),
    ("ApplyFeatureService", "upsert on the feature service"),
    ("GetFeatureService", "D on the feature service"),
    ("ListFeatureServices", "filter D"),
    (
        "DeleteFeatureService",
        "DELETE on the stored feature service",
    ),
    ("ApplySavedDataset", "upsert on the saved dataset"),
    ("GetSavedDataset", "D on the saved dataset"),
    ("ListSavedDatasets", "filter D"),
    ("DeleteSavedDataset", "DELETE on the stored saved dataset"),
    ("CreateDatasetFromRetrieval", "CREATE on SavedDataset(name)"),
    ("GetDatasetData", "READ_OFFLINE on the saved dataset"),
    (
        "GetDatasetJobStatus",
        "D on SavedDataset(the job's dataset name)",
    ),
    (
        "ListDatasetJobs",
        "filter D on SavedDataset(each job's dataset name)",
    ),
    ("ApplyValidationReference", "upsert on the reference"),
    ("GetValidationReference", "D on the reference"),
    ("ListValidationReferences", "filter D"),
    (
        "DeleteValidationReference",
        "DELETE on the stored reference",
    ),
    ("ApplyPermission", "upsert on the permission"),
    ("GetPermission", "D on the permission"),
    ("ListPermissions", "filter D"),
    ("DeletePermission", "DELETE on the stored permission"),
    (
        "ApplyProject",
        "upsert on the project (its own permissions)",
    ),
    ("GetProject", "D on the project"),
    (
        "ListProjects",
        "the projects the caller may D, each against its own permissions (never fails as a whole)",
    ),
    ("DeleteProject", "DELETE on the stored project"),
    (
        "ApplyMaterialization",
        "WRITE_ONLINE on the stored view (the request's view if none)",
    ),
    ("ListProjectMetadata", "D on the project if it exists"),
    ("UpdateInfra", "upsert on Project(project)"),
    (
        "GetInfra",
        "D on the project, or CREATE on Project(project) if it does not exist",
    ),
    (
        "Commit",
        "UPDATE or CREATE on at least one project (each against its own permissions)",
    ),
    ("Refresh", "upsert on Project(project)"),
    (
        "Proto",
        "the projects the caller may D, and in each the objects it may D (never fails as a whole)",
    ),
    ("GetRegistryLineage", "D on the project if it exists"),
    ("GetObjectRelationships", "D on the project if it exists"),
    (
        "ListFeatures",
        "filter D on the views the features belong to",
    ),
    ("GetFeature", "filter D on the views the feature belongs to"),
];

/// Who calls an RPC, and whether their permissions are checked (`None`: `auth: no_auth`).
#[derive(Clone)]
pub(crate) struct Caller {
    checked: Option<(Arc<Authorizer>, User)>,
}

impl Caller {
    pub(crate) fn unchecked() -> Self {
        Self { checked: None }
    }

    pub(crate) fn checked(authorizer: Arc<Authorizer>, user: User) -> Self {
        Self {
            checked: Some((authorizer, user)),
        }
    }

    pub(crate) fn is_checked(&self) -> bool {
        self.checked.is_some()
    }

    /// `assert_permissions` against the permissions of `project`.
    pub(crate) fn check(
        &self,
        catalog: &Catalog,
        project: &str,
        resource: ResourceRef<'_>,
        actions: &[Action],
    ) -> Result<(), FeastError> {
        let Some((authorizer, user)) = &self.checked else {
            return Ok(());
        };
        let permissions = feast_auth::project_permissions(catalog, project);
        authorizer.check(user, &permissions, resource, actions)
    }

    /// DESCRIBE on a stored object of `project`.
    pub(crate) fn describe<T: RegistryObject>(
        &self,
        catalog: &Catalog,
        project: &str,
        object: &T,
    ) -> Result<(), FeastError> {
        self.check(
            catalog,
            project,
            ResourceRef::of(object),
            &[Action::Describe],
        )
    }

    /// DESCRIBE on a project, when it exists (Feast ignores a missing project here).
    pub(crate) fn describe_project_if_any(
        &self,
        catalog: &Catalog,
        project: &str,
    ) -> Result<(), FeastError> {
        match catalog.get::<core::Project>(project, project) {
            Ok(p) => self.describe(catalog, project, p),
            Err(_) => Ok(()),
        }
    }

    /// `permitted_resources(items, DESCRIBE)` with the permissions of `project`.
    pub(crate) fn filter<T>(
        &self,
        catalog: &Catalog,
        project: &str,
        items: Vec<T>,
        resource: impl Fn(&T) -> ResourceRef<'_>,
    ) -> Result<Vec<T>, FeastError> {
        let Some((authorizer, user)) = &self.checked else {
            return Ok(items);
        };
        let permissions = feast_auth::project_permissions(catalog, project);
        authorizer.filter(user, &permissions, items, resource, &[Action::Describe])
    }

    /// The items the caller may DESCRIBE, never failing as a whole: for the listings that
    /// cross projects (`ListProjects`, `Proto`), where one tenant's permission set must not
    /// decide whether another tenant can list at all.
    pub(crate) fn visible<T>(
        &self,
        catalog: &Catalog,
        project: &str,
        items: Vec<T>,
        resource: impl Fn(&T) -> ResourceRef<'_>,
    ) -> Vec<T> {
        let Some((authorizer, user)) = &self.checked else {
            return items;
        };
        let permissions = feast_auth::project_permissions(catalog, project);
        items
            .into_iter()
            .filter(|item| {
                authorizer
                    .check(user, &permissions, resource(item), &[Action::Describe])
                    .is_ok()
            })
            .collect()
    }

    /// `assert_permissions_to_update`: `[DESCRIBE, UPDATE]` on what is stored under the new
    /// object's name and on the new object, or `CREATE` on the new object.
    pub(crate) fn upsert(
        &self,
        catalog: &Catalog,
        project: &str,
        stored: Option<ResourceRef<'_>>,
        new: ResourceRef<'_>,
    ) -> Result<(), FeastError> {
        match stored {
            Some(stored) => {
                let update = [Action::Describe, Action::Update];
                self.check(catalog, project, stored, &update)?;
                self.check(catalog, project, new, &update)
            }
            None => self.check(catalog, project, new, &[Action::Create]),
        }
    }

    /// [`Caller::upsert`] for an object of a stored kind.
    pub(crate) fn upsert_object<T: RegistryObject>(
        &self,
        catalog: &Catalog,
        project: &str,
        new: &T,
    ) -> Result<(), FeastError> {
        let stored = catalog.get::<T>(new.name(), project).ok();
        self.upsert(
            catalog,
            project,
            stored.map(ResourceRef::of),
            ResourceRef::of(new),
        )
    }

    /// [`Caller::upsert`] on `Project(name)`.
    pub(crate) fn upsert_project(&self, catalog: &Catalog, name: &str) -> Result<(), FeastError> {
        let stored = catalog.get::<core::Project>(name, name).ok();
        self.upsert(
            catalog,
            name,
            stored.map(ResourceRef::of),
            ResourceRef::new(ResourceKind::Project, name),
        )
    }

    /// `Commit`: the caller may create or update at least one project. A registry without
    /// projects (the very first apply) is let through, as Feast does.
    pub(crate) fn may_commit(&self, catalog: &Catalog) -> Result<(), FeastError> {
        if self.checked.is_none() || catalog.proto().projects.is_empty() {
            return Ok(());
        }
        let none = Default::default();
        let allowed = catalog.projects(&none).any(|p| {
            let name = p.name();
            [Action::Update, Action::Create]
                .iter()
                .any(|a| self.check(catalog, name, ResourceRef::of(p), &[*a]).is_ok())
        });
        if allowed {
            Ok(())
        } else {
            Err(permission_error(
                "Not authorized to commit registry changes: CREATE or UPDATE permission \
                 required on at least one project",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC of the service has a row, and every row names an RPC.
    #[test]
    fn every_rpc_has_a_rule() {
        let pool = prost_reflect::DescriptorPool::decode(feast_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let service = pool
            .get_service_by_name("feast.registry.RegistryServer")
            .expect("RegistryServer in the descriptor set");
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        let rules: Vec<&str> = RPC_RULES.iter().map(|(rpc, _)| *rpc).collect();
        let missing: Vec<&String> = methods
            .iter()
            .filter(|m| !rules.contains(&m.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "RPCs without an authorization rule: {missing:?}"
        );
        let unknown: Vec<&&str> = rules
            .iter()
            .filter(|r| !methods.iter().any(|m| m == *r))
            .collect();
        assert!(
            unknown.is_empty(),
            "rules for RPCs the service lacks: {unknown:?}"
        );
        let mut sorted = rules.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), rules.len(), "one row per RPC");
    }
}
