//! The registry service over real gRPC on loopback: Feast's staging/commit semantics, error
//! envelopes, external changes and concurrent writers, pagination, health, size limits.

use std::time::Duration;

use feast_proto::core;
use feast_proto::registry::registry_server_client::RegistryServerClient;
use feast_proto::registry::*;
use feast_registry::{FileStore, RegistryService, ServiceOptions};
use prost::Message;
use tonic::transport::Channel;

struct Server {
    client: RegistryServerClient<Channel>,
    channel: Channel,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(options: ServiceOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let service = RegistryService::open(Box::new(FileStore::new(&path)), options)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        feast_registry::serve_on(
            listener,
            service,
            feast_auth::Authenticator::NoAuth,
            None,
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        client: RegistryServerClient::new(channel.clone()),
        channel,
        path,
        _dir: dir,
        stop: Some(stop),
        handle,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("server stops")
            .unwrap();
    }

    fn on_disk(&self) -> core::Registry {
        core::Registry::decode(std::fs::read(&self.path).unwrap().as_slice()).unwrap()
    }
}

fn entity(name: &str) -> core::Entity {
    core::Entity {
        spec: Some(core::EntitySpecV2 {
            name: name.into(),
            join_key: format!("{name}_id"),
            value_type: feast_proto::types::value_type::Enum::Int64 as i32,
            ..Default::default()
        }),
        meta: None,
    }
}

/// An entity as stored in the registry (scoped to `project`).
fn stored_entity(name: &str, project: &str) -> core::Entity {
    let mut e = entity(name);
    e.spec.as_mut().unwrap().project = project.into();
    e
}

fn feature_view(name: &str) -> core::FeatureView {
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: name.into(),
            entities: vec!["driver".into()],
            ..Default::default()
        }),
        meta: None,
    }
}

fn error_class(status: &tonic::Status) -> String {
    let detail: serde_json::Value =
        serde_json::from_str(status.message()).expect("Feast error envelope");
    assert_eq!(detail["module"], "feast.errors");
    detail["class"].as_str().unwrap().to_owned()
}

async fn apply_entity(s: &mut Server, name: &str, project: &str, commit: bool) {
    s.client
        .apply_entity(ApplyEntityRequest {
            entity: Some(entity(name)),
            project: project.into(),
            commit,
        })
        .await
        .unwrap();
}

async fn get_entity(s: &mut Server, name: &str) -> Result<core::Entity, tonic::Status> {
    s.client
        .get_entity(GetEntityRequest {
            name: name.into(),
            project: "demo".into(),
            allow_cache: false,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn staged_changes_are_visible_until_refresh_and_persist_on_commit() {
    let mut s = start(ServiceOptions::default()).await;
    // The first apply creates the project, which Feast commits at once.
    apply_entity(&mut s, "driver", "demo", false).await;
    assert_eq!(s.on_disk().projects.len(), 1);
    apply_entity(&mut s, "rider", "demo", false).await;
    assert!(
        get_entity(&mut s, "rider").await.is_ok(),
        "staged changes are visible to reads"
    );
    assert!(
        !s.on_disk()
            .entities
            .iter()
            .any(|e| e.spec.as_ref().unwrap().name == "rider")
    );

    s.client
        .refresh(RefreshRequest {
            project: "demo".into(),
        })
        .await
        .unwrap();
    let err = get_entity(&mut s, "rider").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(error_class(&err), "EntityNotFoundException");
    assert!(
        err.message()
            .contains("Entity rider does not exist in project demo")
    );

    apply_entity(&mut s, "rider", "demo", false).await;
    let before = s.on_disk().version_id;
    s.client
        .update_infra(UpdateInfraRequest {
            infra: Some(core::Infra::default()),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap();
    let disk = s.on_disk();
    assert_ne!(
        disk.version_id, before,
        "every commit gets a new version_id"
    );
    assert!(
        disk.entities
            .iter()
            .any(|e| e.spec.as_ref().unwrap().name == "rider")
    );

    // Proto carries the committed version and time, not "now".
    let proto = s.client.proto(()).await.unwrap().into_inner();
    assert_eq!(proto.version_id, disk.version_id);
    assert_eq!(proto.last_updated, disk.last_updated);
    s.stop().await;
}

#[tokio::test]
async fn created_timestamp_is_kept_and_view_kinds_cannot_share_names() {
    let mut s = start(ServiceOptions::default()).await;
    apply_entity(&mut s, "driver", "demo", true).await;
    let first = get_entity(&mut s, "driver").await.unwrap().meta.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    apply_entity(&mut s, "driver", "demo", true).await;
    let second = get_entity(&mut s, "driver").await.unwrap().meta.unwrap();
    assert_eq!(first.created_timestamp, second.created_timestamp);
    assert_ne!(first.last_updated_timestamp, second.last_updated_timestamp);

    use apply_feature_view_request::BaseFeatureView;
    s.client
        .apply_feature_view(ApplyFeatureViewRequest {
            base_feature_view: Some(BaseFeatureView::FeatureView(feature_view("stats"))),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap();
    let odfv = core::OnDemandFeatureView {
        spec: Some(core::OnDemandFeatureViewSpec {
            name: "stats".into(),
            ..Default::default()
        }),
        meta: None,
    };
    let err = s
        .client
        .apply_feature_view(ApplyFeatureViewRequest {
            base_feature_view: Some(BaseFeatureView::OnDemandFeatureView(odfv)),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert_eq!(error_class(&err), "ConflictingFeatureViewNames");

    let err = s
        .client
        .apply_feature_view(ApplyFeatureViewRequest {
            base_feature_view: None,
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let any = s
        .client
        .get_any_feature_view(GetAnyFeatureViewRequest {
            name: "stats".into(),
            project: "demo".into(),
            allow_cache: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        any.any_feature_view.unwrap().any_feature_view,
        Some(any_feature_view::AnyFeatureView::FeatureView(_))
    ));
    s.stop().await;
}

#[tokio::test]
async fn external_changes_are_reloaded_and_concurrent_writers_refused() {
    let mut s = start(ServiceOptions::default()).await;
    apply_entity(&mut s, "driver", "demo", true).await;

    // Another process rewrites the file (e.g. `feast-rs apply` on the same repo).
    let mut external = s.on_disk();
    external.entities.push(stored_entity("external", "demo"));
    external.version_id = "external-write".into();
    std::fs::write(&s.path, external.encode_to_vec()).unwrap();
    assert!(
        get_entity(&mut s, "external").await.is_ok(),
        "allow_cache=false reads pick up the change"
    );

    // Stage a change, then let another writer win: the commit must be refused, not clobber it.
    apply_entity(&mut s, "staged", "demo", false).await;
    let mut racing = s.on_disk();
    racing.entities.push(stored_entity("racing", "demo"));
    std::thread::sleep(Duration::from_millis(10));
    std::fs::write(&s.path, racing.encode_to_vec()).unwrap();
    let err = s.client.commit(()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert!(
        err.message().contains("changed by another writer"),
        "{}",
        err.message()
    );
    assert!(
        s.on_disk()
            .entities
            .iter()
            .any(|e| e.spec.as_ref().unwrap().name == "racing"),
        "the other write survives"
    );

    // After a refresh the server works on the new state again.
    s.client
        .refresh(RefreshRequest {
            project: "demo".into(),
        })
        .await
        .unwrap();
    apply_entity(&mut s, "after", "demo", true).await;
    let names: Vec<String> = s
        .on_disk()
        .entities
        .iter()
        .map(|e| e.spec.as_ref().unwrap().name.clone())
        .collect();
    assert!(
        names.contains(&"racing".to_owned()) && names.contains(&"after".to_owned()),
        "{names:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn lists_filter_sort_and_paginate() {
    let mut s = start(ServiceOptions::default()).await;
    for name in ["c", "a", "e", "b", "d"] {
        apply_entity(&mut s, name, "demo", false).await;
    }
    apply_entity(&mut s, "other_project_entity", "other", true).await;
    let response = s
        .client
        .list_entities(ListEntitiesRequest {
            project: "demo".into(),
            allow_cache: true,
            tags: Default::default(),
            pagination: Some(PaginationParams { page: 2, limit: 2 }),
            sorting: Some(SortingParams {
                sort_by: "name".into(),
                sort_order: "asc".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = response
        .entities
        .iter()
        .map(|e| e.spec.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["c", "d"]);
    let meta = response.pagination.unwrap();
    assert_eq!(
        (
            meta.total_count,
            meta.total_pages,
            meta.has_next,
            meta.has_previous
        ),
        (5, 3, true, true)
    );

    let mut tagged = entity("tagged");
    tagged
        .spec
        .as_mut()
        .unwrap()
        .tags
        .insert("team".into(), "ml".into());
    s.client
        .apply_entity(ApplyEntityRequest {
            entity: Some(tagged),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap();
    let only_tagged = s
        .client
        .list_entities(ListEntitiesRequest {
            project: "demo".into(),
            tags: [("team".to_owned(), "ml".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_tagged.entities.len(), 1);

    let projects = s
        .client
        .list_projects(ListProjectsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<String> = projects
        .projects
        .iter()
        .map(|p| p.spec.as_ref().unwrap().name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["demo", "other"]);
    let metadata = s
        .client
        .list_project_metadata(ListProjectMetadataRequest {
            project: "demo".into(),
            allow_cache: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.project_metadata.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn materialization_intervals_and_features() {
    let mut s = start(ServiceOptions::default()).await;
    let mut fv = feature_view("stats");
    fv.spec.as_mut().unwrap().features = vec![core::FeatureSpecV2 {
        name: "conv_rate".into(),
        value_type: feast_proto::types::value_type::Enum::FloatList as i32,
        ..Default::default()
    }];
    use apply_feature_view_request::BaseFeatureView;
    s.client
        .apply_feature_view(ApplyFeatureViewRequest {
            base_feature_view: Some(BaseFeatureView::FeatureView(fv.clone())),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap();
    let ts = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    s.client
        .apply_materialization(ApplyMaterializationRequest {
            feature_view: Some(fv),
            project: "demo".into(),
            start_date: Some(ts(100)),
            end_date: Some(ts(200)),
            commit: true,
        })
        .await
        .unwrap();
    let stored = s
        .on_disk()
        .feature_views
        .into_iter()
        .next()
        .unwrap()
        .meta
        .unwrap();
    assert_eq!(stored.materialization_intervals.len(), 1);
    assert_eq!(stored.state, core::FeatureViewState::AvailableOnline as i32);

    let feature = s
        .client
        .get_feature(GetFeatureRequest {
            project: "demo".into(),
            feature_view: "stats".into(),
            name: "conv_rate".into(),
            allow_cache: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(feature.r#type, "Array(Float32)");
    assert_eq!(feature.kind, "feature");
    let missing = s
        .client
        .get_feature(GetFeatureRequest {
            project: "demo".into(),
            feature_view: "stats".into(),
            name: "nope".into(),
            allow_cache: true,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(error_class(&missing), "FeastObjectNotFoundException");
    s.stop().await;
}

#[tokio::test]
async fn oversized_proto_is_refused_with_advice_and_health_is_served() {
    let mut s = start(ServiceOptions {
        max_response_bytes: 200,
        ..ServiceOptions::default()
    })
    .await;
    for i in 0..20 {
        apply_entity(&mut s, &format!("entity_{i}"), "demo", i == 19).await;
    }
    let err = s.client.proto(()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("List"), "{}", err.message());

    // Lists are held to the same limit, and advise paging, which then works.
    let list = |pagination| ListEntitiesRequest {
        project: "demo".into(),
        pagination,
        ..Default::default()
    };
    let err = s.client.list_entities(list(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("pages"), "{}", err.message());
    let page = s
        .client
        .list_entities(list(Some(PaginationParams { page: 1, limit: 1 })))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entities.len(), 1);

    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    for service in ["", "feast.registry.RegistryServer"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn lineage_and_object_relationships_are_sorted_and_paginated() {
    let mut s = start(ServiceOptions::default()).await;
    let mut fv = feature_view("stats");
    let spec = fv.spec.as_mut().unwrap();
    spec.features = ["conv_rate", "acc_rate"]
        .iter()
        .map(|n| core::FeatureSpecV2 {
            name: (*n).into(),
            ..Default::default()
        })
        .collect();
    spec.batch_source = Some(core::DataSource {
        name: "stats_source".into(),
        ..Default::default()
    });
    use apply_feature_view_request::BaseFeatureView;
    s.client
        .apply_feature_view(ApplyFeatureViewRequest {
            base_feature_view: Some(BaseFeatureView::FeatureView(fv)),
            project: "demo".into(),
            commit: false,
        })
        .await
        .unwrap();
    s.client
        .apply_feature_service(ApplyFeatureServiceRequest {
            feature_service: Some(core::FeatureService {
                spec: Some(core::FeatureServiceSpec {
                    name: "svc".into(),
                    features: vec![core::FeatureViewProjection {
                        feature_view_name: "stats".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                meta: None,
            }),
            project: "demo".into(),
            commit: true,
        })
        .await
        .unwrap();
    let pair = |r: &EntityRelation| {
        let (a, b) = (r.source.clone().unwrap(), r.target.clone().unwrap());
        format!("{}:{}->{}:{}", a.r#type, a.name, b.r#type, b.name)
    };

    let lineage = s
        .client
        .get_registry_lineage(GetRegistryLineageRequest {
            project: "demo".into(),
            allow_cache: true,
            pagination: Some(PaginationParams { page: 1, limit: 3 }),
            sorting: Some(SortingParams {
                sort_by: "source.name".into(),
                sort_order: "desc".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let direct: Vec<String> = lineage.relationships.iter().map(pair).collect();
    assert_eq!(
        direct,
        [
            "dataSource:stats_source->featureView:stats",
            "featureView:stats->featureService:svc",
            "entity:driver->featureView:stats",
        ]
    );
    let meta = lineage.relationships_pagination.unwrap();
    assert_eq!(
        (meta.total_count, meta.total_pages, meta.has_next),
        (5, 2, true)
    );
    let indirect: Vec<String> = lineage.indirect_relationships.iter().map(pair).collect();
    assert_eq!(
        indirect,
        [
            "dataSource:stats_source->featureService:svc",
            // Ties keep their lineage order, as Python's stable sort (reverse included).
            "entity:driver->featureService:svc",
            "entity:driver->dataSource:stats_source",
        ]
    );
    let meta = lineage.indirect_relationships_pagination.unwrap();
    assert_eq!((meta.total_count, meta.total_pages), (5, 2));

    let related = s
        .client
        .get_object_relationships(GetObjectRelationshipsRequest {
            project: "demo".into(),
            object_type: "entity".into(),
            object_name: "driver".into(),
            include_indirect: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let related: Vec<String> = related.relationships.iter().map(pair).collect();
    assert_eq!(
        related,
        [
            "entity:driver->featureView:stats",
            "entity:driver->featureService:svc",
            "entity:driver->dataSource:stats_source",
        ]
    );

    let unknown = s
        .client
        .get_object_relationships(GetObjectRelationshipsRequest {
            project: "demo".into(),
            object_type: "view".into(),
            object_name: "stats".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unknown);
    assert_eq!(
        unknown.message(),
        "Exception calling application: 'view' is not a valid FeastObjectType"
    );

    // An unknown project is no error: there is simply no lineage.
    let empty = s
        .client
        .get_registry_lineage(GetRegistryLineageRequest {
            project: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.relationships.is_empty() && empty.indirect_relationships.is_empty());
    assert_eq!(
        empty.relationships_pagination,
        Some(PaginationMetadata::default())
    );
    s.stop().await;
}
