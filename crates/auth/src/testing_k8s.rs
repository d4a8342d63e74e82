//! Test support (feature `testing`): a loopback Kubernetes API server with the endpoints a
//! feast-rs server calls to authenticate Kubernetes tokens, answering JSON as the real API
//! does:
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`,
//! - `GET /apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings`,
//! - `GET /apis/rbac.authorization.k8s.io/v1/rolebindings` (every namespace),
//! - `GET /apis/rbac.authorization.k8s.io/v1/clusterrolebindings`,
//! - `GET /apis/rbac.authorization.k8s.io/v1/clusterroles/{name}`.
//!
//! Like a real API server it refuses callers without the server's own credential (the token
//! of the kubeconfig [`TestKubernetes::kubeconfig`] writes), and it counts reviews.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// The token the feast-rs server presents to the API (its own service account).
pub const SERVER_TOKEN: &str = "feast-server-sa-token";

#[derive(Default)]
struct Cluster {
    /// token -> (username, groups)
    tokens: HashMap<String, (String, Vec<String>)>,
    role_bindings: Vec<Value>,
    cluster_role_bindings: Vec<Value>,
    cluster_roles: HashMap<String, Value>,
}

struct Shared {
    cluster: Mutex<Cluster>,
    reviews: AtomicUsize,
}

/// A loopback Kubernetes API. Stops when dropped.
pub struct TestKubernetes {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: crate::testing::StopOnDrop,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

/// Like a real API server, every endpoint refuses a caller without the server's credential.
async fn require_server_token(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SERVER_TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    next.run(request).await
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    Json(json!({
        "kind": kind,
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

async fn token_review(State(shared): State<Arc<Shared>>, Json(review): Json<Value>) -> Response {
    shared.reviews.fetch_add(1, Ordering::SeqCst);
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let cluster = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let status = match cluster.tokens.get(token) {
        Some((username, groups)) => json!({
            "authenticated": true,
            "user": {"username": username, "uid": format!("uid-{username}"), "groups": groups},
            "audiences": ["https://kubernetes.default.svc"],
        }),
        // What the API answers for a token it does not know: no `authenticated`.
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    };
    (
        StatusCode::CREATED,
        Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"token": token},
            "status": status,
        })),
    )
        .into_response()
}

async fn namespaced_role_bindings(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
) -> Response {
    let cluster = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let items = cluster
        .role_bindings
        .iter()
        .filter(|rb| rb["metadata"]["namespace"] == ns.as_str())
        .cloned()
        .collect();
    list("RoleBindingList", items)
}

async fn all_role_bindings(State(shared): State<Arc<Shared>>) -> Response {
    let cluster = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    list("RoleBindingList", cluster.role_bindings.clone())
}

async fn cluster_role_bindings(State(shared): State<Arc<Shared>>) -> Response {
    let cluster = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    list(
        "ClusterRoleBindingList",
        cluster.cluster_role_bindings.clone(),
    )
}

async fn cluster_role(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let cluster = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    match cluster.cluster_roles.get(&name) {
        Some(role) => Json(role.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("clusterroles.rbac.authorization.k8s.io \"{name}\" not found"),
        ),
    }
}

fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Value {
    let mut s = json!({"kind": kind, "name": name});
    match namespace {
        Some(ns) => s["namespace"] = json!(ns),
        None => s["apiGroup"] = json!("rbac.authorization.k8s.io"),
    }
    s
}

impl TestKubernetes {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            cluster: Mutex::new(Cluster::default()),
            reviews: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                get(namespaced_role_bindings),
            )
            .route(
                "/apis/rbac.authorization.k8s.io/v1/rolebindings",
                get(all_role_bindings),
            )
            .route(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                get(cluster_role_bindings),
            )
            .route(
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
                get(cluster_role),
            )
            .layer(axum::middleware::from_fn(require_server_token))
            .with_state(shared.clone());
        Self {
            addr,
            shared,
            _server: crate::testing::serve_until_dropped(listener, app),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.shared
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many TokenReviews were made.
    pub fn reviews(&self) -> usize {
        self.shared.reviews.load(Ordering::SeqCst)
    }

    /// Writes a kubeconfig for this API into `dir` (context namespace `namespace`: the
    /// feast-rs server's own) and returns its path.
    pub fn kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: feast\n  user:\n    token: {SERVER_TOKEN}\ncontexts:\n- name: test\n  \
             context:\n    cluster: test\n    user: feast\n    namespace: {namespace}\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A service account's token: reviewed as `system:serviceaccount:<ns>:<name>` with the
    /// groups Kubernetes gives service accounts.
    pub fn service_account_token(&self, ns: &str, name: &str) -> String {
        let token = format!("sa-{ns}-{name}-token");
        self.cluster().tokens.insert(
            token.clone(),
            (
                format!("system:serviceaccount:{ns}:{name}"),
                vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated".into(),
                ],
            ),
        );
        token
    }

    /// A user's (opaque) token.
    pub fn user_token(&self, username: &str, groups: &[&str]) -> String {
        let token = format!("user-{username}-token");
        let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        all.push("system:authenticated".into());
        self.cluster()
            .tokens
            .insert(token.clone(), (username.to_owned(), all));
        token
    }

    /// Any token, reviewed as `username` with `groups`.
    pub fn register(&self, token: &str, username: &str, groups: &[&str]) {
        self.cluster().tokens.insert(
            token.to_owned(),
            (
                username.to_owned(),
                groups.iter().map(|g| g.to_string()).collect(),
            ),
        );
    }

    /// Invalidates a token (as deleting its service account would).
    pub fn revoke(&self, token: &str) {
        self.cluster().tokens.remove(token);
    }

    /// A RoleBinding `name` in `ns` of `role` (a Role, or a ClusterRole when `cluster_role`)
    /// to `subjects` given as `(kind, name, namespace)`.
    pub fn add_role_binding(
        &self,
        ns: &str,
        name: &str,
        role: &str,
        cluster_role: bool,
        subjects: &[(&str, &str, Option<&str>)],
        labels: &[(&str, &str)],
    ) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let binding = json!({
            "kind": "RoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": format!("rb-{ns}-{name}")},
            "subjects": subjects.iter().map(|(k, n, s)| subject(k, n, *s)).collect::<Vec<_>>(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                        "kind": if cluster_role { "ClusterRole" } else { "Role" }, "name": role},
        });
        self.cluster().role_bindings.push(binding);
    }

    /// A ClusterRoleBinding of the ClusterRole `role` to `subjects`.
    pub fn add_cluster_role_binding(
        &self,
        name: &str,
        role: &str,
        subjects: &[(&str, &str, Option<&str>)],
    ) {
        let binding = json!({
            "kind": "ClusterRoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name, "uid": format!("crb-{name}")},
            "subjects": subjects.iter().map(|(k, n, s)| subject(k, n, *s)).collect::<Vec<_>>(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        });
        self.cluster().cluster_role_bindings.push(binding);
    }

    /// A ClusterRole with `rules` (`[{"apiGroups": [""], "resources": [...], "verbs": [...]}]`).
    pub fn add_cluster_role(&self, name: &str, rules: Value) {
        let role = json!({
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name, "uid": format!("cr-{name}")},
            "rules": rules,
        });
        self.cluster().cluster_roles.insert(name.to_owned(), role);
    }
}
