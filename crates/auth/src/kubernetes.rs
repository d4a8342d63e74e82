//! Kubernetes identities (PROTOCOLS.md §5.4): a bearer token is whatever the cluster's
//! `TokenReview` API says it is, and the caller's roles, groups and namespaces come from the
//! cluster's RBAC objects, as Feast's `kubernetes_token_parser.py` reads them.
//!
//! - `auth.type: kubernetes`: TokenReview, then
//!   - a service account `system:serviceaccount:<ns>:<sa>` is the user `<ns>:<sa>` (Feast's
//!     name for it), with the roles of the RoleBindings *in this server's namespace* that
//!     name it as a subject, the groups of its review plus the `Group` subjects of the
//!     RoleBindings in `<ns>` and of the ClusterRoleBindings whose ClusterRole can read
//!     namespaces (or names `<ns>`), and the namespace `<ns>`;
//!   - any other user keeps its reviewed name, with the roles of every RoleBinding and
//!     ClusterRoleBinding naming it or one of its groups, and the namespaces of the
//!     RoleBindings that make it a project member (`dashboard-permissions-*` with the label
//!     `opendatahub.io/dashboard=true`, or a `ClusterRole` `admin` binding);
//!   - every group `system:serviceaccounts:<ns>` adds the namespace `<ns>`.
//! - `auth.type: oidc`, for a token carrying a `kubernetes.io` claim (a service-account token
//!   sent to an OIDC server): TokenReview only; the user is the reviewed name and the
//!   namespace of the service account, with no roles or groups.
//!
//! Unlike Feast, the identity always comes from a successful TokenReview: Feast's
//! `kubernetes` parser takes the service-account name from the token's unverified `sub` even
//! when the review failed (anyone could name any service account), and accepts an
//! "intra-communication" name without any review (feast#6785). Here a token the cluster does
//! not authenticate is a 401, whatever it claims.
//!
//! Reviews and RBAC lookups cost API-server round trips, so a reviewed identity is cached
//! for [`KubernetesValidator::cache_ttl`] (one minute by default; revocation takes at most
//! that long to apply). The server needs `create` on `tokenreviews`, and `list` on
//! `rolebindings`/`clusterrolebindings` and `get` on `clusterroles` (deploy/ shows the RBAC).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::OnceCell;

use crate::error::AuthError;
use crate::user::User;

/// Where Kubernetes mounts the pod's namespace.
pub const NAMESPACE_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How many reviewed tokens are remembered at most.
const CACHE_CAPACITY: usize = 10_000;

/// Where the API server is.
#[derive(Clone)]
pub enum ClusterAccess {
    /// In-cluster configuration, else `KUBECONFIG`, else `~/.kube/config` (kube's inference).
    Infer,
    /// An explicit configuration (tests: a kubeconfig pointing at a loopback API).
    Config(Box<kube::Config>),
}

struct Cluster {
    client: kube::Client,
    /// This server's namespace: where service accounts' roles are looked up.
    namespace: String,
}

/// Validates Kubernetes bearer tokens through the cluster's API. Share it in an `Arc`.
pub struct KubernetesValidator {
    access: ClusterAccess,
    cluster: OnceCell<Cluster>,
    cache: Mutex<HashMap<String, (Instant, User)>>,
    cache_ttl: Duration,
}

impl std::fmt::Debug for KubernetesValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesValidator")
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

fn unavailable(why: impl std::fmt::Display) -> AuthError {
    AuthError::ProviderUnavailable(format!("Kubernetes API: {why}"))
}

impl KubernetesValidator {
    pub fn new(access: ClusterAccess) -> Self {
        Self {
            access,
            cluster: OnceCell::new(),
            cache: Mutex::new(HashMap::new()),
            cache_ttl: Duration::from_secs(60),
        }
    }

    /// A validator for the cluster described by the kubeconfig file at `path` (its current
    /// context's namespace is the server's namespace).
    pub async fn from_kubeconfig(path: &std::path::Path) -> Result<Self, AuthError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| AuthError::Config(format!("kubeconfig {}: {e}", path.display())))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| AuthError::Config(format!("kubeconfig {}: {e}", path.display())))?;
        Ok(Self::new(ClusterAccess::Config(Box::new(config))))
    }

    /// How long a reviewed identity is reused.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    async fn cluster(&self) -> Result<&Cluster, AuthError> {
        self.cluster
            .get_or_try_init(|| async {
                let config = match &self.access {
                    ClusterAccess::Config(c) => (**c).clone(),
                    // The caller's token cannot be accepted: a 401 that says why (the
                    // server's log says it too), never a 500.
                    ClusterAccess::Infer => kube::Config::infer().await.map_err(|e| {
                        tracing::warn!(
                            message = "a Kubernetes token arrived but no Kubernetes API is configured",
                            error = %e
                        );
                        AuthError::Rejected(format!(
                            "Kubernetes tokens cannot be verified by this server: it has no \
                             Kubernetes API to review them with (not in a pod, no kubeconfig): {e}"
                        ))
                    })?,
                };
                let namespace = std::fs::read_to_string(NAMESPACE_PATH)
                    .ok()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client = kube::Client::try_from(config).map_err(unavailable)?;
                Ok(Cluster { client, namespace })
            })
            .await
    }

    fn cached(&self, token: &str) -> Option<User> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(token)
            .filter(|(at, _)| at.elapsed() < self.cache_ttl)
            .map(|(_, user)| user.clone())
    }

    fn remember(&self, token: &str, user: &User) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            let ttl = self.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (Instant::now(), user.clone()));
    }

    /// The reviewed name and groups of `token`; an unauthenticated token is a 401.
    async fn review(&self, token: &str) -> Result<(String, Vec<String>), AuthError> {
        let cluster = self.cluster().await?;
        let reviews: Api<TokenReview> = Api::all(cluster.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &request)
            .await
            .map_err(unavailable)?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Rejected(format!(
                "Kubernetes token validation failed: {}",
                status
                    .error
                    .as_deref()
                    .unwrap_or("the token is not authenticated")
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(AuthError::Rejected(
                "Kubernetes token validation failed: the review names no user".into(),
            ));
        }
        Ok((username, user.groups.unwrap_or_default()))
    }

    /// `auth.type: kubernetes`: the caller of `token`, with roles, groups and namespaces.
    pub async fn validate(&self, token: &str) -> Result<User, AuthError> {
        if let Some(user) = self.cached(token) {
            return Ok(user);
        }
        let (reviewed, review_groups) = self.review(token).await?;
        let cluster = self.cluster().await?;
        let rbac = Rbac::load(
            &cluster.client,
            &cluster.namespace,
            service_account(&reviewed),
        )
        .await?;
        let user = rbac.user(&reviewed, review_groups, &cluster.namespace);
        tracing::debug!(message = "Kubernetes token reviewed", user = %user.username, roles = ?user.roles);
        self.remember(token, &user);
        Ok(user)
    }

    /// `auth.type: oidc` given a service-account token: the reviewed name and its namespace.
    pub async fn validate_service_account(&self, token: &str) -> Result<User, AuthError> {
        if let Some(user) = self.cached(token) {
            return Ok(user);
        }
        let (reviewed, _) = self.review(token).await?;
        let namespaces: Vec<String> = service_account(&reviewed)
            .map(|(ns, _)| vec![ns.to_owned()])
            .unwrap_or_default();
        let user = User::new(reviewed).with_namespaces(namespaces);
        self.remember(token, &user);
        Ok(user)
    }
}

/// `(namespace, name)` of a reviewed `system:serviceaccount:<ns>:<sa>`.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

/// The RBAC objects an identity is derived from.
struct Rbac {
    /// RoleBindings of every namespace.
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// The ClusterRoles the cluster role bindings refer to, by name.
    cluster_roles: HashMap<String, ClusterRole>,
}

impl Rbac {
    async fn load(
        client: &kube::Client,
        own_namespace: &str,
        service_account: Option<(&str, &str)>,
    ) -> Result<Self, AuthError> {
        let list = ListParams::default();
        // A service account needs the bindings of two namespaces; a user those of all.
        let role_bindings = match service_account {
            Some((sa_ns, _)) => {
                let mut out = Api::<RoleBinding>::namespaced(client.clone(), own_namespace)
                    .list(&list)
                    .await
                    .map_err(unavailable)?
                    .items;
                if sa_ns != own_namespace {
                    out.extend(
                        Api::<RoleBinding>::namespaced(client.clone(), sa_ns)
                            .list(&list)
                            .await
                            .map_err(unavailable)?
                            .items,
                    );
                }
                out
            }
            None => {
                Api::<RoleBinding>::all(client.clone())
                    .list(&list)
                    .await
                    .map_err(unavailable)?
                    .items
            }
        };
        let cluster_role_bindings = Api::<ClusterRoleBinding>::all(client.clone())
            .list(&list)
            .await
            .map_err(unavailable)?
            .items;
        let mut cluster_roles = HashMap::new();
        if service_account.is_some() {
            let api = Api::<ClusterRole>::all(client.clone());
            let names: BTreeSet<&str> = cluster_role_bindings
                .iter()
                .filter(|b| b.role_ref.kind == "ClusterRole")
                .map(|b| b.role_ref.name.as_str())
                .collect();
            for name in names {
                if let Some(role) = api.get_opt(name).await.map_err(unavailable)? {
                    cluster_roles.insert(name.to_owned(), role);
                }
            }
        }
        Ok(Self {
            role_bindings,
            cluster_role_bindings,
            cluster_roles,
        })
    }

    fn user(&self, reviewed: &str, review_groups: Vec<String>, own_namespace: &str) -> User {
        let mut groups: BTreeSet<String> = review_groups.into_iter().collect();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        let mut roles: BTreeSet<String> = BTreeSet::new();
        let username = match service_account(reviewed) {
            Some((sa_ns, sa_name)) => {
                namespaces.insert(sa_ns.to_owned());
                for rb in self.in_namespace(sa_ns) {
                    groups.extend(subjects(&rb.subjects, "Group").map(|s| s.name.clone()));
                }
                for crb in &self.cluster_role_bindings {
                    if self.grants_namespace_access(crb, sa_ns) {
                        groups.extend(subjects(&crb.subjects, "Group").map(|s| s.name.clone()));
                    }
                }
                for rb in self.in_namespace(own_namespace) {
                    let names_it = subjects(&rb.subjects, "ServiceAccount")
                        .any(|s| s.name == sa_name && s.namespace.as_deref() == Some(sa_ns));
                    if names_it {
                        roles.insert(rb.role_ref.name.clone());
                    }
                }
                format!("{sa_ns}:{sa_name}")
            }
            None => {
                let names_user = |s: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
                    subjects(s, "User").any(|s| s.name == reviewed)
                };
                for rb in &self.role_bindings {
                    if names_user(&rb.subjects)
                        || subjects(&rb.subjects, "Group").any(|s| groups.contains(&s.name))
                    {
                        roles.insert(rb.role_ref.name.clone());
                    }
                    let name = rb.metadata.name.as_deref().unwrap_or("");
                    let dashboard = name.starts_with("dashboard-permissions-")
                        && rb
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("opendatahub.io/dashboard"))
                            .is_some_and(|v| v == "true");
                    let admin = rb.role_ref.kind == "ClusterRole" && rb.role_ref.name == "admin";
                    if (dashboard || admin) && names_user(&rb.subjects) {
                        namespaces.extend(rb.metadata.namespace.clone());
                    }
                }
                for crb in &self.cluster_role_bindings {
                    if names_user(&crb.subjects)
                        || subjects(&crb.subjects, "Group").any(|s| groups.contains(&s.name))
                    {
                        roles.insert(crb.role_ref.name.clone());
                    }
                }
                reviewed.to_owned()
            }
        };
        for g in &groups {
            if let Some(ns) = g
                .strip_prefix("system:serviceaccounts:")
                .filter(|ns| !ns.is_empty() && !ns.contains(':'))
            {
                namespaces.insert(ns.to_owned());
            }
        }
        User::new(username)
            .with_roles(roles)
            .with_groups(groups)
            .with_namespaces(namespaces)
    }

    fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a RoleBinding> {
        self.role_bindings
            .iter()
            .filter(move |rb| rb.metadata.namespace.as_deref() == Some(ns))
    }

    /// Feast's `_cluster_role_binding_grants_namespace_access`.
    fn grants_namespace_access(&self, crb: &ClusterRoleBinding, ns: &str) -> bool {
        let Some(role) = self.cluster_roles.get(&crb.role_ref.name) else {
            return false;
        };
        role.rules.iter().flatten().any(|rule| {
            let on_namespaces = rule
                .resources
                .iter()
                .flatten()
                .any(|r| r == "namespaces" || r == "*");
            let reads = rule
                .verbs
                .iter()
                .any(|v| v == "get" || v == "list" || v == "*");
            let names_it = rule.resource_names.iter().flatten().any(|n| n == ns);
            (on_namespaces && reads) || names_it
        })
    }
}

fn subjects<'a>(
    subjects: &'a Option<Vec<k8s_openapi::api::rbac::v1::Subject>>,
    kind: &'a str,
) -> impl Iterator<Item = &'a k8s_openapi::api::rbac::v1::Subject> {
    subjects.iter().flatten().filter(move |s| s.kind == kind)
}

/// A shared, lazily connected validator for OIDC servers that meet service-account tokens.
pub(crate) fn lazy_in_cluster() -> Arc<KubernetesValidator> {
    Arc::new(KubernetesValidator::new(ClusterAccess::Infer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account("system:serviceaccount:feast:online"),
            Some(("feast", "online"))
        );
        assert_eq!(service_account("system:serviceaccount:feast"), None);
        assert_eq!(service_account("system:serviceaccount:a:b:c"), None);
        assert_eq!(service_account("alice"), None);
    }
}
