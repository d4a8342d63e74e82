//! The registry server with `auth: oidc` (a loopback test issuer): every RPC of
//! `feast.registry.RegistryServer` × {no token, malformed header, every kind of bad token,
//! a valid token of a user the permissions deny, a valid token of another tenant's admin, a
//! valid token of an allowed user}. Requests are built from JSON through the service's own
//! descriptors, so the matrix covers every RPC the proto declares (a test fails when one has
//! no row).

use std::sync::Arc;

use feast_auth::testing::{BadToken, TestIssuer};
use feast_auth::{Authenticator, Authorizer, OidcValidator};
use feast_registry::{FileStore, RegistryService, ServiceOptions};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::transport::Channel;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(feast_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn from_json(pool: &DescriptorPool, message: &str, value: &Json) -> DynamicMessage {
    let desc = pool
        .get_message_by_name(message)
        .unwrap_or_else(|| panic!("no message {message}"));
    DynamicMessage::deserialize(desc, value.clone())
        .unwrap_or_else(|e| panic!("{message} from {value}: {e}"))
}

const A: &str = "team_a";
const B: &str = "team_b";

/// `prefix` names every object of `project`, so a response that leaks one is easy to spot.
fn project_objects(project: &str, prefix: &str, admin_role: &str, reader_role: &str) -> Json {
    let all_actions = json!([
        "CREATE",
        "DESCRIBE",
        "UPDATE",
        "DELETE",
        "READ_ONLINE",
        "READ_OFFLINE",
        "WRITE_ONLINE",
        "WRITE_OFFLINE"
    ]);
    json!({
        "projects": [{"spec": {"name": project}}],
        "entities": [{"spec": {"name": format!("{prefix}_driver"), "project": project,
                               "joinKey": "driver_id", "valueType": "INT64"}}],
        "dataSources": [{"name": format!("{prefix}_src"), "project": project, "type": "BATCH_FILE",
                         "fileOptions": {"uri": "data.parquet"}, "timestampField": "ts",
                         "dataSourceClassType": "feast.infra.offline_stores.file_source.FileSource"}],
        "featureViews": [{"spec": {"name": format!("{prefix}_stats"), "project": project,
                                   "entities": [format!("{prefix}_driver")],
                                   "features": [{"name": "rate", "valueType": "DOUBLE"}],
                                   "online": true}}],
        "streamFeatureViews": [{"spec": {"name": format!("{prefix}_stream"), "project": project}}],
        "onDemandFeatureViews": [{"spec": {"name": format!("{prefix}_odfv"), "project": project}}],
        "labelViews": [{"spec": {"name": format!("{prefix}_labels"), "project": project}}],
        "featureServices": [{"spec": {"name": format!("{prefix}_svc"), "project": project,
                                      "features": [{"featureViewName": format!("{prefix}_stats")}]}}],
        "savedDatasets": [{"spec": {"name": format!("{prefix}_ds"), "project": project,
                                    "features": [format!("{prefix}_stats:rate")]}}],
        "validationReferences": [{"name": format!("{prefix}_ref"), "project": project,
                                  "referenceDatasetName": format!("{prefix}_ds")}],
        "permissions": [
            {"spec": {"name": format!("{prefix}_admin"), "project": project, "actions": all_actions,
                      "policy": {"roleBasedPolicy": {"roles": [admin_role]}}}},
            {"spec": {"name": format!("{prefix}_reader"), "project": project, "actions": ["DESCRIBE"],
                      "namePatterns": [".*"],
                      "policy": {"roleBasedPolicy": {"roles": [reader_role]}}}}
        ]
    })
}

/// Both tenants in one registry file.
fn registry_bytes(pool: &DescriptorPool) -> Vec<u8> {
    let mut merged = project_objects(A, "alpha", "team-a-admin", "team-a-reader");
    let other = project_objects(B, "beta", "team-b-admin", "team-b-reader");
    for (k, v) in other.as_object().unwrap() {
        merged[k]
            .as_array_mut()
            .unwrap()
            .extend(v.as_array().unwrap().iter().cloned());
    }
    // A third project without permissions: Feast lets any authenticated user in.
    merged["projects"]
        .as_array_mut()
        .unwrap()
        .push(json!({"spec": {"name": "open"}}));
    merged["entities"].as_array_mut().unwrap().push(
        json!({"spec": {"name": "open_driver", "project": "open", "joinKey": "id", "valueType": "INT64"}}),
    );
    from_json(pool, "feast.core.Registry", &merged).encode_to_vec()
}

/// What a call must answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// OK, and the response shows team A's objects.
    Data,
    /// OK (nothing of team A to show, or nothing to check).
    Ok,
    /// OK, and nothing of team A in the response.
    Hidden,
    Denied,
    NotFound,
    Unimplemented,
}

/// One RPC: its request (with `{P}` = team A's project) and what team A's admin and a denied
/// user get. Mutations come after reads, deletes last, so the admin's run can go in order.
fn rows() -> Vec<(&'static str, Json, Expect, Expect)> {
    use Expect::*;
    let fv = json!({"spec": {"name": "alpha_stats", "project": A, "entities": ["alpha_driver"],
                             "features": [{"name": "rate", "valueType": "DOUBLE"}], "online": true}});
    vec![
        (
            "GetEntity",
            json!({"name": "alpha_driver", "project": A}),
            Data,
            Denied,
        ),
        ("ListEntities", json!({"project": A}), Data, Hidden),
        (
            "GetDataSource",
            json!({"name": "alpha_src", "project": A}),
            Data,
            Denied,
        ),
        ("ListDataSources", json!({"project": A}), Data, Hidden),
        (
            "GetAnyFeatureView",
            json!({"name": "alpha_stats", "project": A}),
            Data,
            Denied,
        ),
        ("ListAllFeatureViews", json!({"project": A}), Data, Hidden),
        (
            "ListAllFeatureViews",
            json!({"project": A, "featureService": "alpha_svc"}),
            Data,
            Denied,
        ),
        (
            "GetFeatureView",
            json!({"name": "alpha_stats", "project": A}),
            Data,
            Denied,
        ),
        ("ListFeatureViews", json!({"project": A}), Data, Hidden),
        (
            "GetStreamFeatureView",
            json!({"name": "alpha_stream", "project": A}),
            Data,
            Denied,
        ),
        (
            "ListStreamFeatureViews",
            json!({"project": A}),
            Data,
            Hidden,
        ),
        (
            "GetOnDemandFeatureView",
            json!({"name": "alpha_odfv", "project": A}),
            Data,
            Denied,
        ),
        (
            "ListOnDemandFeatureViews",
            json!({"project": A}),
            Data,
            Hidden,
        ),
        (
            "GetLabelView",
            json!({"name": "alpha_labels", "project": A}),
            Data,
            Denied,
        ),
        ("ListLabelViews", json!({"project": A}), Data, Hidden),
        (
            "GetFeatureService",
            json!({"name": "alpha_svc", "project": A}),
            Data,
            Denied,
        ),
        ("ListFeatureServices", json!({"project": A}), Data, Hidden),
        (
            "GetSavedDataset",
            json!({"name": "alpha_ds", "project": A}),
            Data,
            Denied,
        ),
        ("ListSavedDatasets", json!({"project": A}), Data, Hidden),
        (
            "GetValidationReference",
            json!({"name": "alpha_ref", "project": A}),
            Data,
            Denied,
        ),
        (
            "ListValidationReferences",
            json!({"project": A}),
            Data,
            Hidden,
        ),
        (
            "GetPermission",
            json!({"name": "alpha_admin", "project": A}),
            Data,
            Denied,
        ),
        ("ListPermissions", json!({"project": A}), Data, Hidden),
        ("GetProject", json!({"name": A}), Ok, Denied),
        ("ListProjects", json!({}), Ok, Ok),
        ("ListProjectMetadata", json!({"project": A}), Ok, Denied),
        ("GetInfra", json!({"project": A}), Ok, Denied),
        ("Proto", json!({}), Data, Hidden),
        ("GetRegistryLineage", json!({"project": A}), Data, Denied),
        (
            "GetObjectRelationships",
            json!({"project": A, "objectType": "featureView", "objectName": "alpha_stats"}),
            Ok,
            Denied,
        ),
        ("ListFeatures", json!({"project": A}), Data, Hidden),
        (
            "GetFeature",
            json!({"project": A, "featureView": "alpha_stats", "name": "rate"}),
            Data,
            NotFound,
        ),
        (
            "GetDatasetData",
            json!({"name": "alpha_ds", "project": A}),
            Unimplemented,
            Denied,
        ),
        (
            "CreateDatasetFromRetrieval",
            json!({"name": "alpha_new_ds", "project": A}),
            Unimplemented,
            Denied,
        ),
        (
            "GetDatasetJobStatus",
            json!({"jobId": "no-such-job"}),
            NotFound,
            NotFound,
        ),
        ("ListDatasetJobs", json!({"project": A}), Ok, Ok),
        (
            "ApplyEntity",
            json!({"entity": {"spec": {"name": "alpha_driver", "joinKey": "driver_id",
                                        "valueType": "INT64", "description": "updated"}},
                   "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "ApplyDataSource",
            json!({"dataSource": {"name": "alpha_src2", "type": "BATCH_FILE",
                                  "fileOptions": {"uri": "other.parquet"}, "timestampField": "ts"},
                   "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "ApplyFeatureView",
            json!({"featureView": fv, "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplyFeatureService",
            json!({"featureService": {"spec": {"name": "alpha_svc2",
                   "features": [{"featureViewName": "alpha_stats"}]}}, "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplySavedDataset",
            json!({"savedDataset": {"spec": {"name": "alpha_ds2", "features": ["alpha_stats:rate"]}},
                   "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplyValidationReference",
            json!({"validationReference": {"name": "alpha_ref2", "referenceDatasetName": "alpha_ds"},
                   "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplyPermission",
            json!({"permission": {"spec": {"name": "alpha_extra", "actions": ["DESCRIBE"],
                   "policy": {"roleBasedPolicy": {"roles": ["nobody"]}}}}, "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplyProject",
            json!({"project": {"spec": {"name": A, "description": "team A"}}, "commit": false}),
            Ok,
            Denied,
        ),
        (
            "ApplyMaterialization",
            json!({"featureView": fv, "project": A, "startDate": "2026-01-01T00:00:00Z",
                   "endDate": "2026-01-02T00:00:00Z", "commit": false}),
            Ok,
            Denied,
        ),
        (
            "UpdateInfra",
            json!({"infra": {}, "project": A, "commit": false}),
            Ok,
            Denied,
        ),
        ("Commit", json!({}), Ok, Denied),
        ("Refresh", json!({"project": A}), Ok, Denied),
        (
            "DeleteFeatureService",
            json!({"name": "alpha_svc", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteFeatureView",
            json!({"name": "alpha_stream", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteSavedDataset",
            json!({"name": "alpha_ds", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteValidationReference",
            json!({"name": "alpha_ref", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeletePermission",
            json!({"name": "alpha_reader", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteDataSource",
            json!({"name": "alpha_src", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteEntity",
            json!({"name": "alpha_driver", "project": A, "commit": true}),
            Ok,
            Denied,
        ),
        (
            "DeleteProject",
            json!({"name": A, "commit": true}),
            Ok,
            Denied,
        ),
    ]
}

struct Server {
    addr: std::net::SocketAddr,
    channel: Channel,
    issuer: TestIssuer,
    pool: DescriptorPool,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(authorizer: Authorizer) -> Server {
    start_with(authorizer, None).await
}

/// A server authenticating with `authenticator` (default: OIDC tokens of the test issuer).
async fn start_with(authorizer: Authorizer, authenticator: Option<Authenticator>) -> Server {
    let pool = pool();
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::fs::write(&path, registry_bytes(&pool)).unwrap();
    let service = RegistryService::open(Box::new(FileStore::new(&path)), ServiceOptions::default())
        .await
        .unwrap()
        .with_authorizer(Arc::new(authorizer));
    let authenticator = authenticator.unwrap_or_else(|| {
        Authenticator::Oidc(Arc::new(OidcValidator::new(issuer.settings()).unwrap()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        feast_registry::serve_on(listener, service, authenticator, None, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        addr,
        channel,
        issuer,
        pool,
        _dir: dir,
        _stop: stop,
    }
}

impl Server {
    fn channel_target(&self) -> String {
        self.addr.to_string()
    }

    fn method(&self, rpc: &str) -> MethodDescriptor {
        self.pool
            .get_service_by_name("feast.registry.RegistryServer")
            .unwrap()
            .methods()
            .find(|m| m.name() == rpc)
            .unwrap_or_else(|| panic!("no RPC {rpc}"))
    }

    /// Calls `rpc` with the JSON request and `authorization` header value; the response as
    /// JSON, or the status.
    async fn call(
        &self,
        rpc: &str,
        request: &Json,
        authorization: Option<&str>,
    ) -> Result<Json, tonic::Status> {
        let method = self.method(rpc);
        let body = from_json(&self.pool, method.input().full_name(), request).encode_to_vec();
        let path = format!("/feast.registry.RegistryServer/{rpc}");
        let response =
            feast_auth::testing::grpc_unary_raw(self.channel.clone(), &path, body, authorization)
                .await?;
        let message = DynamicMessage::decode(method.output(), response).unwrap();
        Ok(serde_json::to_value(&message).unwrap())
    }

    fn bearer(&self, user: &str, roles: &[&str]) -> String {
        format!("Bearer {}", self.issuer.user_token(user, roles, &[]))
    }
}

fn outcome(result: &Result<Json, tonic::Status>) -> Result<String, Code> {
    match result {
        Ok(json) => Ok(json.to_string()),
        Err(status) => Err(status.code()),
    }
}

fn check(rpc: &str, who: &str, expect: Expect, result: Result<Json, tonic::Status>) {
    let got = outcome(&result);
    let fail = |why: &str| -> ! {
        panic!("{rpc} as {who}: expected {expect:?}, {why}; got {result:?}");
    };
    match (expect, &got) {
        (Expect::Data, Ok(body)) if body.contains("alpha_") => {}
        (Expect::Data, Ok(_)) => fail("team A's objects missing"),
        (Expect::Ok, Ok(_)) => {}
        (Expect::Hidden, Ok(body)) if !body.contains("alpha_") => {}
        (Expect::Hidden, Ok(_)) => fail("team A's objects leaked"),
        (Expect::Denied, Err(Code::PermissionDenied)) => {
            let status = result.as_ref().unwrap_err();
            let detail: Json = serde_json::from_str(status.message()).unwrap();
            assert_eq!(detail["class"], "FeastPermissionError", "{rpc}: {detail}");
            assert!(
                detail["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Permission error:"),
                "{rpc}: {detail}"
            );
        }
        (Expect::NotFound, Err(Code::NotFound)) => {}
        (Expect::Unimplemented, Err(Code::Unimplemented)) => {}
        _ => fail("wrong outcome"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_rejects_missing_and_bad_tokens() {
    let server = start(Authorizer::new()).await;
    let rows = rows();
    let covered: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0).collect();
    let declared: Vec<String> = server
        .pool
        .get_service_by_name("feast.registry.RegistryServer")
        .unwrap()
        .methods()
        .map(|m| m.name().to_owned())
        .collect();
    for rpc in &declared {
        assert!(covered.contains(rpc.as_str()), "no matrix row for {rpc}");
    }

    let mut headers: Vec<(String, Option<String>)> = vec![
        ("no token".into(), None),
        ("Basic scheme".into(), Some("Basic dXNlcjpwdw==".into())),
        ("Bearer without token".into(), Some("Bearer".into())),
    ];
    for kind in BadToken::ALL {
        headers.push((
            format!("{kind:?}"),
            Some(format!("Bearer {}", server.issuer.bad_token(kind, "alice"))),
        ));
    }
    let mut calls = 0;
    for (rpc, request, _, _) in &rows {
        for (what, header) in &headers {
            let result = server.call(rpc, request, header.as_deref()).await;
            match result {
                Err(status) if status.code() == Code::Unauthenticated => calls += 1,
                other => panic!("{rpc} with {what}: expected UNAUTHENTICATED, got {other:?}"),
            }
        }
    }
    println!(
        "registry auth matrix: {calls} calls with a missing or bad token, all UNAUTHENTICATED"
    );

    // The health check is the one public call.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_decide_every_rpc_per_tenant() {
    let server = start(Authorizer::new()).await;
    let rows = rows();
    let eve = server.bearer("eve", &[]);
    let bob = server.bearer("bob", &["team-b-admin"]);
    let reader = server.bearer("rita", &["team-a-reader"]);
    let alice = server.bearer("alice", &["team-a-admin"]);
    let mut totals = std::collections::BTreeMap::<&str, usize>::new();

    // Denied users first: nothing they try may change team A.
    for (rpc, request, _, denied) in &rows {
        // Both may commit: team B's admin may update its own project and anyone may update
        // the project without permissions. Everything else of team A is closed to them.
        let denied = if *rpc == "Commit" {
            Expect::Ok
        } else {
            *denied
        };
        check(
            rpc,
            "eve (no roles)",
            denied,
            server.call(rpc, request, Some(&eve)).await,
        );
        check(
            rpc,
            "bob (team B admin)",
            denied,
            server.call(rpc, request, Some(&bob)).await,
        );
        *totals.entry("denied").or_default() += 2;
    }

    // A reader may describe, not write.
    let get = json!({"name": "alpha_driver", "project": A});
    check(
        "GetEntity",
        "rita (team A reader)",
        Expect::Data,
        server.call("GetEntity", &get, Some(&reader)).await,
    );
    let apply = json!({"entity": {"spec": {"name": "alpha_x", "joinKey": "x", "valueType": "INT64"}},
                       "project": A, "commit": true});
    check(
        "ApplyEntity",
        "rita (team A reader)",
        Expect::Denied,
        server.call("ApplyEntity", &apply, Some(&reader)).await,
    );

    // Team A's admin, in order: reads see team A's data (and never team B's), writes land.
    for (rpc, request, allowed, _) in &rows {
        let result = server.call(rpc, request, Some(&alice)).await;
        if let Ok(body) = &result {
            assert!(
                !body.to_string().contains("beta_"),
                "{rpc} leaked team B: {body}"
            );
        }
        check(rpc, "alice (team A admin)", *allowed, result);
        *totals.entry("allowed").or_default() += 1;
    }
    println!("registry auth matrix: {totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_project_listings_show_each_caller_its_own() {
    let server = start(Authorizer::new()).await;
    let projects = |body: Json| -> Vec<String> {
        let mut names: Vec<String> = body["projects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| p["spec"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let bob = server.bearer("bob", &["team-b-admin"]);
    let alice = server.bearer("alice", &["team-a-admin"]);
    let list = server
        .call("ListProjects", &json!({}), Some(&bob))
        .await
        .unwrap();
    assert_eq!(projects(list), ["open", "team_b"]);
    let list = server
        .call("ListProjects", &json!({}), Some(&alice))
        .await
        .unwrap();
    assert_eq!(projects(list), ["open", "team_a"]);

    let proto = server.call("Proto", &json!({}), Some(&bob)).await.unwrap();
    let text = proto.to_string();
    assert!(
        text.contains("beta_stats") && text.contains("open_driver"),
        "{text}"
    );
    assert!(
        !text.contains("alpha_"),
        "team A leaked into team B's Proto: {text}"
    );
    assert_eq!(projects(proto), ["open", "team_b"]);

    // A project without permissions is open to every authenticated user (Feast's default).
    let get = json!({"name": "open_driver", "project": "open"});
    let eve = server.bearer("eve", &[]);
    assert!(server.call("GetEntity", &get, Some(&eve)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_authorizer_closes_projects_without_permissions() {
    let server = start(Authorizer::strict()).await;
    let eve = server.bearer("eve", &[]);
    let get = json!({"name": "open_driver", "project": "open"});
    let denied = server
        .call("GetEntity", &get, Some(&eve))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("strict"), "{}", denied.message());
    // Projects with permissions work as before.
    let alice = server.bearer("alice", &["team-a-admin"]);
    let get = json!({"name": "alpha_driver", "project": A});
    assert!(server.call("GetEntity", &get, Some(&alice)).await.is_ok());
    let list = server
        .call("ListProjects", &json!({}), Some(&alice))
        .await
        .unwrap();
    assert!(!list.to_string().contains("\"open\""), "{list}");
    // Eve may update no project at all, so she may not commit.
    let commit = server
        .call("Commit", &json!({}), Some(&eve))
        .await
        .unwrap_err();
    assert_eq!(commit.code(), Code::PermissionDenied);
    assert!(
        commit
            .message()
            .contains("Not authorized to commit registry changes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_permissions_apply_to_later_calls() {
    // `feast apply` stages permissions with commit=false; they govern reads at once.
    let server = start(Authorizer::new()).await;
    let alice = server.bearer("alice", &["team-a-admin"]);
    let carol = server.bearer("carol", &["auditor"]);
    let get = json!({"name": "alpha_driver", "project": A});
    assert_eq!(
        server
            .call("GetEntity", &get, Some(&carol))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let grant = json!({"permission": {"spec": {"name": "alpha_audit", "types": ["ENTITY"],
        "actions": ["DESCRIBE"], "policy": {"roleBasedPolicy": {"roles": ["auditor"]}}}},
        "project": A, "commit": false});
    server
        .call("ApplyPermission", &grant, Some(&alice))
        .await
        .unwrap();
    server.call("GetEntity", &get, Some(&carol)).await.unwrap();
    // Not a feature view, though.
    let fv = json!({"name": "alpha_stats", "project": A});
    assert_eq!(
        server
            .call("GetFeatureView", &fv, Some(&carol))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

/// Service-to-service: a client configured with OIDC client credentials (as the online,
/// offline and materializer servers are when their feature_store.yaml says so) fetches its
/// own token and is authorized as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_registry_client_sends_its_service_token() {
    let server = start(Authorizer::new()).await;
    server.issuer.add_client(
        "alpha-online",
        "s3cret",
        json!({"roles": ["team-a-reader"]}),
    );
    server
        .issuer
        .add_client("stranger", "s3cret", json!({"roles": []}));
    let addr = server.channel_target();
    let options = |client_id: &str| {
        let yaml = format!(
            "project: {A}\nregistry: {{registry_type: remote, path: '{addr}'}}\nprovider: local\n\
             auth:\n  type: oidc\n  client_id: {client_id}\n  client_secret: s3cret\n  \
             auth_discovery_url: {}\n",
            server.issuer.discovery_url()
        );
        let config = feast_core::config::RepoConfig::from_yaml_str(
            &yaml,
            "feature_store.yaml",
            std::path::Path::new("."),
        )
        .unwrap();
        feast_registry::RemoteOptions {
            target: addr.clone(),
            token: feast_auth::TokenProvider::from_config(&config.auth).unwrap(),
            ..Default::default()
        }
    };
    let reader = feast_registry::RemoteRegistry::connect(&options("alpha-online"))
        .await
        .unwrap();
    let catalog = reader.load_project(A).await.unwrap();
    assert!(
        catalog
            .get::<feast_proto::core::Entity>("alpha_driver", A)
            .is_ok()
    );

    let stranger = feast_registry::RemoteRegistry::connect(&options("stranger"))
        .await
        .unwrap();
    let Err(err) = stranger.load_project(A).await else {
        panic!("a stranger read team A");
    };
    assert!(
        matches!(&err, feast_registry::ClientError::Feast(e)
            if e.class == feast_core::error::ErrorClass::FeastPermissionError),
        "a client without a role may not read team A: {err}"
    );

    // Without a token at all, the server refuses the call.
    let anonymous = feast_registry::RemoteRegistry::connect(&feast_registry::RemoteOptions {
        target: addr.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let Err(err) = anonymous.load_project(A).await else {
        panic!("a call without a token was served");
    };
    assert!(
        err.to_string().contains("Missing authentication token"),
        "{err}"
    );
}

/// `auth.type: kubernetes`: the cluster reviews the token and its RBAC gives the roles and
/// namespaces Feast's policies are matched against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_identities_are_authorized_by_their_cluster_roles() {
    use feast_auth::testing_k8s::TestKubernetes;
    let k8s = TestKubernetes::start().await;
    // The registry server runs in namespace `feast`; team A's online server may read.
    k8s.add_role_binding(
        "feast",
        "team-a-online-reads",
        "team-a-reader",
        false,
        &[("ServiceAccount", "online", Some("team-a"))],
        &[],
    );
    k8s.add_role_binding(
        "feast",
        "team-b-admins",
        "team-b-admin",
        false,
        &[("ServiceAccount", "admin", Some("team-b"))],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = k8s.kubeconfig(dir.path(), "feast");
    let validator = feast_auth::KubernetesValidator::from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let server = start_with(
        Authorizer::new(),
        Some(Authenticator::Kubernetes(Arc::new(validator))),
    )
    .await;
    let bearer = |t: String| format!("Bearer {t}");
    let reader = bearer(k8s.service_account_token("team-a", "online"));
    let team_b = bearer(k8s.service_account_token("team-b", "admin"));
    let nobody = bearer(k8s.service_account_token("team-a", "batch"));

    let get = json!({"name": "alpha_driver", "project": A});
    let entity = server.call("GetEntity", &get, Some(&reader)).await.unwrap();
    assert_eq!(entity["spec"]["name"], "alpha_driver");
    let apply = json!({"entity": {"spec": {"name": "alpha_x", "joinKey": "x", "valueType": "INT64"}},
                       "project": A, "commit": true});
    for (who, token) in [
        ("reader", &reader),
        ("team B", &team_b),
        ("no binding", &nobody),
    ] {
        let err = server
            .call("ApplyEntity", &apply, Some(token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
    }
    for token in [&team_b, &nobody] {
        let err = server
            .call("GetEntity", &get, Some(token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let b_get = json!({"name": "beta_driver", "project": B});
    server
        .call("GetEntity", &b_get, Some(&team_b))
        .await
        .unwrap();

    // Tokens the cluster does not know, and forged service-account JWTs, never get in.
    let forged =
        feast_auth::testing::unsigned_token(&json!({"sub": "system:serviceaccount:team-b:admin"}));
    for token in ["Bearer made-up".to_owned(), bearer(forged)] {
        let err = server
            .call("GetEntity", &get, Some(&token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
}
