//! A client of a registry server (`registry_type: remote`): reads a project as a
//! [`Catalog`] and applies changes the way `feast apply` does (every change staged with
//! `commit=false`, then one `Commit`), so a plan computed locally lands atomically.

use std::collections::BTreeMap;

use feast_core::error::{ErrorClass, FeastError};
use feast_core::model::{ObjectKind, RegistryObject};
use feast_core::registry::Catalog;
use feast_proto::core;
use feast_proto::registry::registry_server_client::RegistryServerClient;
use feast_proto::registry::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The channel of a client: every call carries the configured bearer token and the
/// caller's trace context.
pub type AuthChannel = feast_telemetry::WithTraceContext<feast_auth::WithBearer<Channel>>;

/// How to reach a registry server (the `registry:` keys of a remote registry).
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// `host:port`, no scheme (Feast's `path`).
    pub target: String,
    /// CA bundle (PEM) to trust; implies TLS.
    pub ca_cert: Option<Vec<u8>>,
    /// TLS with the system roots when no CA bundle is given.
    pub is_tls: bool,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Overrides the `:authority` (TLS server name).
    pub authority: Option<String>,
    /// The bearer token sent on every call (`auth:` of the client's feature_store.yaml).
    pub token: Option<std::sync::Arc<feast_auth::TokenProvider>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid registry address {target:?}: {reason}")]
    Address { target: String, reason: String },
    #[error("cannot connect to the registry at {target}: {source}")]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
    /// An error the server reported in Feast's envelope.
    #[error("{0}")]
    Feast(FeastError),
    #[error("registry call failed: {0}")]
    Rpc(tonic::Status),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match feast_error_of(&status) {
            Some(e) => ClientError::Feast(e),
            None => ClientError::Rpc(status),
        }
    }
}

/// Parses Feast's error envelope out of a status (what the Python client does).
pub fn feast_error_of(status: &tonic::Status) -> Option<FeastError> {
    let detail: serde_json::Value = serde_json::from_str(status.message()).ok()?;
    let class = detail.get("class")?.as_str()?;
    let message = detail.get("message")?.as_str()?.to_owned();
    let class = ErrorClass::from_name(class).unwrap_or(ErrorClass::FeastError);
    Some(FeastError::new(class, message))
}

/// A connected registry client.
#[derive(Clone)]
pub struct RemoteRegistry {
    client: RegistryServerClient<AuthChannel>,
    target: String,
}

impl RemoteRegistry {
    pub async fn connect(options: &RemoteOptions) -> Result<Self, ClientError> {
        let tls = options.is_tls || options.ca_cert.is_some() || options.client_identity.is_some();
        let url = format!(
            "{}://{}",
            if tls { "https" } else { "http" },
            options.target
        );
        let address_error = |reason: String| ClientError::Address {
            target: options.target.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url).map_err(|e| address_error(e.to_string()))?;
        if let Some(authority) = &options.authority {
            endpoint = endpoint.origin(
                format!("{}://{authority}", if tls { "https" } else { "http" })
                    .parse()
                    .map_err(|e: tonic::codegen::http::uri::InvalidUri| {
                        address_error(e.to_string())
                    })?,
            );
        }
        if tls {
            let mut config = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &options.ca_cert {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &options.client_identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(authority) = &options.authority {
                config = config.domain_name(authority.split(':').next().unwrap_or(authority));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|source| ClientError::Connect {
                    target: options.target.clone(),
                    source,
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                target: options.target.clone(),
                source,
            })?;
        Ok(Self {
            client: RegistryServerClient::new(feast_telemetry::WithTraceContext::new(
                feast_auth::WithBearer::new(channel, options.token.clone()),
            ))
            .max_decoding_message_size(64 * 1024 * 1024),
            target: options.target.clone(),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn grpc(&self) -> RegistryServerClient<AuthChannel> {
        self.client.clone()
    }

    /// Every object of `project` (and the project list), as a [`Catalog`], read fresh
    /// (`allow_cache=false`) through the list RPCs, which have no size limit problems.
    pub async fn load_project(&self, project: &str) -> Result<Catalog, ClientError> {
        let mut c = self.client.clone();
        let p = project.to_owned();
        let infra = c
            .get_infra(GetInfraRequest {
                project: p.clone(),
                allow_cache: false,
            })
            .await?
            .into_inner();
        let registry = core::Registry {
            infra: Some(infra),
            projects: c
                .list_projects(ListProjectsRequest::default())
                .await?
                .into_inner()
                .projects,
            entities: c
                .list_entities(ListEntitiesRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .entities,
            data_sources: c
                .list_data_sources(ListDataSourcesRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .data_sources,
            feature_views: c
                .list_feature_views(ListFeatureViewsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .feature_views,
            stream_feature_views: c
                .list_stream_feature_views(ListStreamFeatureViewsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .stream_feature_views,
            on_demand_feature_views: c
                .list_on_demand_feature_views(ListOnDemandFeatureViewsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .on_demand_feature_views,
            label_views: c
                .list_label_views(ListLabelViewsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .label_views,
            feature_services: c
                .list_feature_services(ListFeatureServicesRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .feature_services,
            permissions: c
                .list_permissions(ListPermissionsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .permissions,
            saved_datasets: c
                .list_saved_datasets(ListSavedDatasetsRequest {
                    project: p.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .saved_datasets,
            validation_references: c
                .list_validation_references(ListValidationReferencesRequest {
                    project: p,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .validation_references,
            ..Default::default()
        };
        Ok(Catalog::from_proto(registry))
    }

    /// Stages `objects` (creates/updates) and `deletions` with `commit=false`, deletions
    /// first, then the infra (when given), then commits them in one `Commit`.
    pub async fn apply_changes(
        &self,
        project: &str,
        changed: &Catalog,
        upserts: &[(ObjectKind, String)],
        deletions: &[(ObjectKind, String)],
        infra: Option<&core::Infra>,
    ) -> Result<(), ClientError> {
        let mut c = self.client.clone();
        let p = project.to_owned();
        for (kind, name) in deletions {
            let name = name.clone();
            match kind {
                ObjectKind::Project => {}
                ObjectKind::DataSource => {
                    c.delete_data_source(DeleteDataSourceRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::Entity => {
                    c.delete_entity(DeleteEntityRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::FeatureService => {
                    c.delete_feature_service(DeleteFeatureServiceRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::Permission => {
                    c.delete_permission(DeletePermissionRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::SavedDataset => {
                    c.delete_saved_dataset(DeleteSavedDatasetRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::ValidationReference => {
                    c.delete_validation_reference(DeleteValidationReferenceRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::FeatureView
                | ObjectKind::OnDemandFeatureView
                | ObjectKind::StreamFeatureView
                | ObjectKind::LabelView => {
                    c.delete_feature_view(DeleteFeatureViewRequest {
                        name,
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
            }
        }
        let none = BTreeMap::new();
        for (kind, name) in upserts {
            use apply_feature_view_request::BaseFeatureView as B;
            let found = |kind: ObjectKind| {
                ClientError::Feast(FeastError::new(
                    ErrorClass::FeastError,
                    format!("{kind} {name} is missing from the applied registry"),
                ))
            };
            match kind {
                ObjectKind::Project => {
                    let project = changed
                        .projects(&none)
                        .find(|o| o.name() == name)
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    c.apply_project(ApplyProjectRequest {
                        project: Some(project),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::DataSource => {
                    let data_source = changed
                        .get::<core::DataSource>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    c.apply_data_source(ApplyDataSourceRequest {
                        data_source: Some(data_source),
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::Entity => {
                    let entity = changed
                        .get::<core::Entity>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    c.apply_entity(ApplyEntityRequest {
                        entity: Some(entity),
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::FeatureView => {
                    let v = changed
                        .get::<core::FeatureView>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    let request = ApplyFeatureViewRequest {
                        base_feature_view: Some(B::FeatureView(v)),
                        project: p.clone(),
                        commit: false,
                    };
                    c.apply_feature_view(request).await?;
                }
                ObjectKind::OnDemandFeatureView => {
                    let v = changed
                        .get::<core::OnDemandFeatureView>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    let request = ApplyFeatureViewRequest {
                        base_feature_view: Some(B::OnDemandFeatureView(v)),
                        project: p.clone(),
                        commit: false,
                    };
                    c.apply_feature_view(request).await?;
                }
                ObjectKind::StreamFeatureView => {
                    let v = changed
                        .get::<core::StreamFeatureView>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    let request = ApplyFeatureViewRequest {
                        base_feature_view: Some(B::StreamFeatureView(v)),
                        project: p.clone(),
                        commit: false,
                    };
                    c.apply_feature_view(request).await?;
                }
                ObjectKind::LabelView => {
                    let v = changed
                        .get::<core::LabelView>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    let request = ApplyFeatureViewRequest {
                        base_feature_view: Some(B::LabelView(v)),
                        project: p.clone(),
                        commit: false,
                    };
                    c.apply_feature_view(request).await?;
                }
                ObjectKind::FeatureService => {
                    let s = changed
                        .get::<core::FeatureService>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    c.apply_feature_service(ApplyFeatureServiceRequest {
                        feature_service: Some(s),
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::Permission => {
                    let perm = changed
                        .get::<core::Permission>(name, &p)
                        .ok()
                        .cloned()
                        .ok_or_else(|| found(*kind))?;
                    c.apply_permission(ApplyPermissionRequest {
                        permission: Some(perm),
                        project: p.clone(),
                        commit: false,
                    })
                    .await?;
                }
                ObjectKind::SavedDataset | ObjectKind::ValidationReference => {}
            }
        }
        if let Some(infra) = infra {
            c.update_infra(UpdateInfraRequest {
                infra: Some(infra.clone()),
                project: p.clone(),
                commit: false,
            })
            .await?;
        }
        c.commit(()).await?;
        Ok(())
    }

    /// Deletes a project and all its objects.
    pub async fn delete_project(&self, project: &str) -> Result<(), ClientError> {
        self.client
            .clone()
            .delete_project(DeleteProjectRequest {
                name: project.to_owned(),
                commit: true,
            })
            .await?;
        Ok(())
    }
}
