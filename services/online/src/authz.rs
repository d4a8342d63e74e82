//! Authorization of the feature server's routes with Feast's `Permission` policies
//! (PROTOCOLS.md §2.7, §5.5). Authentication happens before, in the [`feast_auth::AuthLayer`]
//! around every route; here the authenticated [`User`] is checked against the permissions of
//! the server's project, read from the cached registry snapshot.
//!
//! | Route / RPC | Resource | Actions |
//! |---|---|---|
//! | `/get-online-features`, `GetOnlineFeatures` (both services), by feature service | the feature service | READ_ONLINE |
//! | the same, by feature refs | every feature view and on-demand view named | READ_ONLINE |
//! | `/write-to-online-store`, `WriteToOnlineStore` | the feature view (or stream / on-demand view) | WRITE_ONLINE |
//! | `/push`, `Push` | every view fed by the push source | `online`: WRITE_ONLINE; `offline`: WRITE_OFFLINE; both: both |
//! | `GetFeastServingInfo`, `/docs`, `/openapi.json` | none (authenticated only) | |
//! | `/health`, `/metrics`, `grpc.health.v1` | none (public) | |
//!
//! The project is always the server's own: a request cannot name another tenant's project,
//! so it can neither be authorized against one project's permissions nor read another's data.

use std::sync::Arc;

use feast_auth::{Action, Authorizer, ResourceRef, User};
use feast_core::registry::Catalog;
use feast_proto::core;

use crate::serving::{FeatureSelection, OnlineRequest, ProjectIndex, ServeError};
use crate::write::PushMode;

/// The permission side of a server with authentication on.
#[derive(Debug, Clone)]
pub struct Authz {
    pub authorizer: Arc<Authorizer>,
}

fn denied(e: feast_core::error::FeastError) -> ServeError {
    ServeError::Feast(e)
}

fn no_user() -> ServeError {
    // The auth layer attaches a user to every authenticated request; reaching this means a
    // route was left outside it, which must not turn into access.
    ServeError::Feast(feast_auth::permission_error(
        "no authenticated user on a route that needs one",
    ))
}

impl Authz {
    fn check(
        &self,
        user: Option<&User>,
        index: &ProjectIndex,
        resource: ResourceRef<'_>,
        actions: &[Action],
    ) -> Result<(), ServeError> {
        let user = user.ok_or_else(no_user)?;
        self.authorizer
            .check(user, index.permissions(), resource, actions)
            .map_err(denied)
    }

    /// READ_ONLINE on what a `get_online_features` request reads. Names that do not resolve
    /// are left to the read itself (a 404 without data).
    pub fn read(
        &self,
        user: Option<&User>,
        catalog: &Catalog,
        index: &ProjectIndex,
        request: &OnlineRequest,
    ) -> Result<(), ServeError> {
        let read = [Action::ReadOnline];
        match &request.features {
            FeatureSelection::Service(name) => {
                if let Some(fs) = index.feature_service(catalog, name) {
                    self.check(user, index, ResourceRef::of(fs), &read)?;
                }
            }
            FeatureSelection::Refs(refs) => {
                let mut seen: Vec<&str> = Vec::new();
                for r in refs {
                    let view = r.split_once(':').map_or(r.as_str(), |(v, _)| v);
                    if seen.contains(&view) {
                        continue;
                    }
                    seen.push(view);
                    if let Some(fv) = index.feature_view(catalog, view) {
                        self.check(user, index, ResourceRef::of(fv), &read)?;
                    } else if let Some(odfv) = index.on_demand_view(catalog, view) {
                        self.check(user, index, ResourceRef::of(odfv), &read)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// WRITE_ONLINE on the view a write names (feature, stream or on-demand view).
    pub fn write(
        &self,
        user: Option<&User>,
        catalog: &Catalog,
        index: &ProjectIndex,
        project: &str,
        view: &str,
    ) -> Result<(), ServeError> {
        let write = [Action::WriteOnline];
        if let Ok(fv) = catalog.get::<core::FeatureView>(view, project) {
            self.check(user, index, ResourceRef::of(fv), &write)
        } else if let Ok(sfv) = catalog.get::<core::StreamFeatureView>(view, project) {
            self.check(user, index, ResourceRef::of(sfv), &write)
        } else if let Ok(odfv) = catalog.get::<core::OnDemandFeatureView>(view, project) {
            self.check(user, index, ResourceRef::of(odfv), &write)
        } else {
            // Unknown: the write itself answers 404; an authenticated user learns nothing more.
            user.map(|_| ()).ok_or_else(no_user)
        }
    }

    /// The push's actions on every view fed by the push source.
    pub fn push(
        &self,
        user: Option<&User>,
        catalog: &Catalog,
        index: &ProjectIndex,
        project: &str,
        push_source: &str,
        to: PushMode,
    ) -> Result<(), ServeError> {
        let actions: &[Action] = match to {
            PushMode::Online => &[Action::WriteOnline],
            PushMode::Offline => &[Action::WriteOffline],
            PushMode::OnlineAndOffline => &[Action::WriteOffline, Action::WriteOnline],
        };
        let user = user.ok_or_else(no_user)?;
        let no_tags = Default::default();
        let fed = |s: Option<&core::DataSource>| {
            s.is_some_and(|s| {
                s.r#type == core::data_source::SourceType::PushSource as i32
                    && s.name == push_source
            })
        };
        for fv in catalog.list::<core::FeatureView>(project, &no_tags) {
            if fed(fv.spec.as_ref().and_then(|s| s.stream_source.as_ref())) {
                self.check(Some(user), index, ResourceRef::of(fv), actions)?;
            }
        }
        for sfv in catalog.list::<core::StreamFeatureView>(project, &no_tags) {
            if fed(sfv.spec.as_ref().and_then(|s| s.stream_source.as_ref())) {
                self.check(Some(user), index, ResourceRef::of(sfv), actions)?;
            }
        }
        Ok(())
    }
}
