//! Authorization of the feature server's routes with Feast's `Permission` policies
//! (PROTOCOLS.md §2.7, §5.5). Authentication happens before, in the [`feast_auth::AuthLayer`]
//! around every route; here the authenticated [`User`] is checked against the permissions of
//! the server's project, read from the cached registry snapshot.
//!
//! The route → permission table is [`ROUTE_RULES`].
//!
//! The project is always the server's own: a request cannot name another tenant's project,
//! so it can neither be authorized against one project's permissions nor read another's data.

use std::sync::Arc;

use feast_auth::{Action, Authorizer, ResourceRef, User};

/// Who may call each route and RPC of the feature server: the table reviewers read. A
/// unit test fails when the OpenAPI document or the gRPC services have a route without a
/// row, and the auth tests call every row without a token. `public` rows are the only ones
/// served without a token; `authenticated` ones need a valid token and no permission.
pub const ROUTE_RULES: &[(&str, &str)] = &[
    (
        "POST /get-online-features",
        "READ_ONLINE on the feature service, or on every feature view and on-demand view the refs name",
    ),
    ("POST /write-to-online-store", "WRITE_ONLINE on the view"),
    (
        "POST /push",
        "WRITE_ONLINE (to: online), WRITE_OFFLINE (offline), or both, on every view fed by the push source",
    ),
    ("POST /materialize", "WRITE_ONLINE on every view"),
    (
        "POST /materialize-incremental",
        "WRITE_ONLINE on every view",
    ),
    ("GET /health", "public"),
    ("GET /healthz", "public"),
    ("GET /readyz", "public"),
    ("GET /ready", "public"),
    ("GET /metrics", "public"),
    ("GET /docs", "authenticated"),
    ("GET /openapi.json", "authenticated"),
    (
        "/feast.serving.ServingService/GetFeastServingInfo",
        "authenticated",
    ),
    (
        "/feast.serving.ServingService/GetOnlineFeatures",
        "as POST /get-online-features",
    ),
    (
        "/GrpcFeatureServer/GetOnlineFeatures",
        "as POST /get-online-features",
    ),
    ("/GrpcFeatureServer/Push", "as POST /push"),
    (
        "/GrpcFeatureServer/WriteToOnlineStore",
        "as POST /write-to-online-store",
    ),
    ("/grpc.health.v1.Health/Check", "public"),
    ("/grpc.health.v1.Health/Watch", "public"),
];
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
                    } else if let Some(sfv) = index.stream_view(catalog, view) {
                        self.check(user, index, ResourceRef::of(sfv), &read)?;
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

#[cfg(test)]
mod tests {
    use super::ROUTE_RULES;

    fn has_rule(route: &str) -> bool {
        ROUTE_RULES.iter().any(|(r, _)| *r == route)
    }

    /// Every HTTP route of the OpenAPI document and every RPC of the served gRPC services
    /// has a row; every row names a route that exists.
    #[test]
    fn every_route_has_a_rule() {
        let doc: serde_json::Value = serde_json::from_str(crate::http::OPENAPI).unwrap();
        let mut routes = Vec::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                routes.push(format!("{} {path}", method.to_ascii_uppercase()));
            }
        }
        let pool = prost_reflect::DescriptorPool::decode(feast_proto::FILE_DESCRIPTOR_SET).unwrap();
        for service in ["feast.serving.ServingService", "GrpcFeatureServer"] {
            let service = pool.get_service_by_name(service).unwrap();
            for m in service.methods() {
                routes.push(format!("/{}/{}", service.full_name(), m.name()));
            }
        }
        routes.push("/grpc.health.v1.Health/Check".into());
        routes.push("/grpc.health.v1.Health/Watch".into());
        for route in &routes {
            assert!(has_rule(route), "no authorization rule for {route}");
        }
        for (rule, _) in ROUTE_RULES {
            assert!(
                routes.iter().any(|r| r == rule),
                "rule for an unknown route {rule}"
            );
        }
        // The public rows are exactly the auth layer's public paths.
        for (route, what) in ROUTE_RULES {
            let path = route.rsplit(' ').next().unwrap();
            assert_eq!(
                *what == "public",
                feast_auth::layer::DEFAULT_PUBLIC_PATHS.contains(&path),
                "{route}"
            );
        }
    }
}
