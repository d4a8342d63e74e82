//! `feast.registry.RegistryServer` with Feast's semantics (PROTOCOLS.md §1.3–1.4).
//!
//! The server holds one live registry: what is committed plus what clients staged with
//! `commit=false` (as `feast apply` does before its final `UpdateInfra(commit=true)`).
//! Every read sees the live registry, so staged changes are visible until they are
//! committed or a `Refresh` drops them. Reads with `allow_cache=false` (the Feast SDK's
//! default) first pick up changes made to the store by others, unless changes are staged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use feast_auth::{Action, Authorizer, ResourceKind, ResourceRef, User};
use feast_core::error::{ErrorClass, FeastError, StatusKind};
use feast_core::json::message_to_proto_json;
use feast_core::model::{ObjectKind, RegistryObject};
use feast_core::registry::{Catalog, timestamp};
use feast_core::types::{ValueType, dtype_name};
use feast_proto::core;
use feast_proto::registry::registry_server_server::RegistryServer;
use feast_proto::registry::*;
use prost::Message;
use prost_types::Timestamp;
use tokio::sync::{RwLock, RwLockReadGuard};
use tonic::{Request, Response, Status};

use crate::authz::Caller;
use crate::datasets::{DatasetBackend, DatasetJobs, JobStatus, dummy_dataset};
use crate::lineage;
use crate::paginate::paginate;
use crate::store::{RegistryStore, StoreError, StoreVersion};

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// How long an `allow_cache=true` read may serve the registry without checking the
    /// store for changes (`cache_ttl_seconds`; zero = only when a client asks).
    pub cache_ttl: Duration,
    /// Largest response sent; larger ones get an error pointing at the list RPCs
    /// (grpcio clients, the Feast SDK's included, refuse messages over 4 MiB).
    pub max_response_bytes: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(600),
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

struct State {
    catalog: Catalog,
    /// Store version the committed part of `catalog` corresponds to.
    version: StoreVersion,
    /// Changes applied with `commit=false` and not yet committed.
    dirty: bool,
}

/// The registry gRPC service over a [`RegistryStore`].
pub struct RegistryService {
    store: Box<dyn RegistryStore>,
    state: RwLock<State>,
    options: ServiceOptions,
    started: Instant,
    /// When the store's version was last checked (ms since `started`).
    checked_ms: AtomicU64,
    /// `Some` when callers are authenticated: every RPC checks their permissions.
    authorizer: Option<Arc<Authorizer>>,
    /// What runs `CreateDatasetFromRetrieval` and `GetDatasetData`, when configured.
    datasets: Option<Arc<dyn DatasetBackend>>,
    jobs: Arc<DatasetJobs>,
    /// The service itself, once shared by [`RegistryService::shared`]: dataset jobs outlive
    /// the RPC that started them and commit their result through it.
    me: std::sync::OnceLock<std::sync::Weak<RegistryService>>,
}

fn code(kind: StatusKind) -> tonic::Code {
    match kind {
        StatusKind::Internal => tonic::Code::Internal,
        StatusKind::NotFound => tonic::Code::NotFound,
        StatusKind::PermissionDenied => tonic::Code::PermissionDenied,
        StatusKind::InvalidArgument | StatusKind::Unprocessable => tonic::Code::InvalidArgument,
        StatusKind::Conflict => tonic::Code::Aborted,
        StatusKind::Unavailable => tonic::Code::Unavailable,
        StatusKind::Unimplemented => tonic::Code::Unimplemented,
    }
}

/// Feast's gRPC error contract: the status details are the `{"module","class","message"}`
/// JSON, so the SDK re-raises the same exception class.
pub fn to_status(e: FeastError) -> Status {
    Status::new(code(e.status()), e.to_error_detail())
}

fn store_status(e: StoreError) -> Status {
    let kind = match e {
        StoreError::Conflict { .. } => StatusKind::Conflict,
        StoreError::Io(_) | StoreError::Database(_) => StatusKind::Unavailable,
        StoreError::File(_) | StoreError::Invalid(_) => StatusKind::Internal,
    };
    tracing::warn!(message = "registry store operation failed", error = %e);
    Status::new(
        code(kind),
        FeastError::new(ErrorClass::FeastError, e.to_string()).to_error_detail(),
    )
}

fn invalid(message: impl Into<String>) -> Status {
    Status::new(
        tonic::Code::InvalidArgument,
        FeastError::new(ErrorClass::FeastError, message).to_error_detail(),
    )
}

fn now() -> Timestamp {
    timestamp(chrono::Utc::now())
}

impl RegistryService {
    /// Loads the registry from `store`; an empty store gets an empty registry committed,
    /// as Feast does on first start.
    pub async fn open(
        store: Box<dyn RegistryStore>,
        options: ServiceOptions,
    ) -> Result<Self, StoreError> {
        let (loaded, mut version) = store.load().await?;
        let catalog = match loaded {
            Some(proto) => Catalog::from_proto(proto),
            None => {
                let mut catalog = Catalog::new();
                catalog.stamp_commit(now());
                let committed = store.commit(catalog.proto(), &version).await?;
                version = committed.version;
                committed.merged.map_or(catalog, Catalog::from_proto)
            }
        };
        tracing::info!(message = "registry loaded", location = %store.location(), version_id = %catalog.version_id());
        Ok(Self {
            store,
            state: RwLock::new(State {
                catalog,
                version,
                dirty: false,
            }),
            options,
            started: Instant::now(),
            checked_ms: AtomicU64::new(0),
            authorizer: None,
            datasets: None,
            jobs: Arc::default(),
            me: std::sync::OnceLock::new(),
        })
    }

    /// Serves `CreateDatasetFromRetrieval` / `GetDatasetData` with `backend`.
    pub fn with_datasets(mut self, backend: Arc<dyn DatasetBackend>) -> Self {
        self.datasets = Some(backend);
        self
    }

    /// The service behind an `Arc`, as the server holds it (dataset jobs need that).
    pub fn shared(self) -> Arc<Self> {
        let shared = Arc::new(self);
        let _ = shared.me.set(Arc::downgrade(&shared));
        shared
    }

    fn backend(&self) -> Result<Arc<dyn DatasetBackend>, Status> {
        self.datasets.clone().ok_or_else(|| {
            unimplemented_rpc(
                "dataset creation and preview",
                "this registry server was started without an offline store to run them",
            )
        })
    }

    /// Checks every RPC against Feast permissions with `authorizer` (servers with `auth:`).
    /// The server must then authenticate callers ([`crate::serve_on`] does when given an
    /// enabled authenticator): an RPC without an authenticated user is refused.
    pub fn with_authorizer(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    pub fn authorizer(&self) -> Option<&Arc<Authorizer>> {
        self.authorizer.as_ref()
    }

    /// The caller of an RPC, taken before the request is consumed.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let Some(authorizer) = &self.authorizer else {
            return Ok(Caller::unchecked());
        };
        match request.extensions().get::<User>() {
            Some(user) => Ok(Caller::checked(authorizer.clone(), user.clone())),
            // The auth layer attaches a user to every authenticated call; reaching this means
            // the service runs without it, which must not turn into access.
            None => Err(to_status(feast_auth::permission_error(
                "no authenticated user on a registry call that needs one",
            ))),
        }
    }

    /// Reloads from the store when it changed and nothing is staged.
    async fn sync(&self, force: bool) -> Result<(), Status> {
        let since_check = Duration::from_millis(
            self.elapsed_ms()
                .saturating_sub(self.checked_ms.load(Ordering::Relaxed)),
        );
        let fresh =
            !force && (self.options.cache_ttl.is_zero() || since_check < self.options.cache_ttl);
        if fresh || self.state.read().await.dirty {
            return Ok(());
        }
        // The common case (nothing changed) costs one stat and a shared lock.
        let current = self.store.version().await.map_err(store_status)?;
        self.checked_ms.store(self.elapsed_ms(), Ordering::Relaxed);
        {
            let state = self.state.read().await;
            if state.dirty || current == state.version {
                return Ok(());
            }
        }
        let mut state = self.state.write().await;
        if state.dirty || current == state.version {
            return Ok(());
        }
        let (loaded, version) = self.store.load().await.map_err(store_status)?;
        state.catalog = loaded.map(Catalog::from_proto).unwrap_or_default();
        state.version = version;
        tracing::info!(
            message = "registry reloaded after an external change",
            version_id = %state.catalog.version_id()
        );
        Ok(())
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn view(&self, allow_cache: bool) -> Result<RwLockReadGuard<'_, State>, Status> {
        self.sync(!allow_cache).await?;
        Ok(self.state.read().await)
    }

    /// Applies a change to the live registry and commits when asked (or when the change
    /// created a project, which Feast commits at once).
    async fn mutate<R>(
        &self,
        commit: bool,
        change: impl FnOnce(&mut Catalog, Timestamp) -> Result<R, FeastError>,
    ) -> Result<R, Status> {
        self.sync(false).await?;
        let mut state = self.state.write().await;
        let projects_before = state.catalog.proto().projects.len();
        let out = change(&mut state.catalog, now()).map_err(to_status)?;
        state.dirty = true;
        if commit || state.catalog.proto().projects.len() > projects_before {
            self.persist(&mut state).await?;
        }
        Ok(out)
    }

    /// Writes the live registry as a new version (fresh `version_id`, `last_updated`).
    async fn persist(&self, state: &mut State) -> Result<(), Status> {
        let mut stamped = state.catalog.clone();
        stamped.stamp_commit(now());
        let committed = match self.store.commit(stamped.proto(), &state.version).await {
            Ok(committed) => committed,
            Err(e) => {
                if matches!(e, StoreError::Conflict { .. }) {
                    // The staged changes cannot be written over the other writer's: drop
                    // them and serve what the store holds, so the client's retry applies
                    // its change onto the current registry.
                    if let Ok((loaded, version)) = self.store.load().await {
                        state.catalog = loaded.map(Catalog::from_proto).unwrap_or_default();
                        state.version = version;
                        state.dirty = false;
                    }
                }
                return Err(store_status(e));
            }
        };
        state.catalog = match committed.merged {
            Some(merged) => Catalog::from_proto(merged),
            None => stamped,
        };
        state.version = committed.version;
        state.dirty = false;
        Ok(())
    }

    async fn get_rpc<T: RegistryObject, Q>(
        &self,
        request: Request<Q>,
        key: fn(&Q) -> (&str, &str, bool),
    ) -> R<T> {
        let caller = self.caller(&request)?;
        let (name, project, allow_cache) = key(request.get_ref());
        let state = self.view(allow_cache).await?;
        let object = Self::get::<T>(&state, name, project)?;
        caller
            .describe(&state.catalog, project, &object)
            .map_err(to_status)?;
        Ok(Response::new(object))
    }

    /// A plain list RPC: the objects of one kind in the request's project, tag-filtered,
    /// sorted and paginated.
    async fn list_std<T: RegistryObject, Q: ListRequest>(
        &self,
        request: &Request<Q>,
    ) -> Result<(Vec<T>, Option<PaginationMetadata>), Status> {
        let caller = self.caller(request)?;
        let r = request.get_ref();
        let state = self.view(r.allow_cache()).await?;
        let (items, pagination) = Self::list::<T>(
            &state,
            &caller,
            r.project(),
            r.tags(),
            |_| true,
            r.pagination(),
            r.sorting(),
        )?;
        self.check_items(&items, &format!("List {}", T::KIND))?;
        Ok((items, pagination))
    }

    fn get<T: RegistryObject>(state: &State, name: &str, project: &str) -> Result<T, Status> {
        state
            .catalog
            .get::<T>(name, project)
            .cloned()
            .map_err(to_status)
    }

    /// The objects of one kind in `project` that pass `keep` and the caller may describe,
    /// then sorted and paginated (Feast paginates after the permission filter).
    fn list<T: RegistryObject>(
        state: &State,
        caller: &Caller,
        project: &str,
        tags: &BTreeMap<String, String>,
        keep: impl Fn(&T) -> bool,
        pagination: Option<&PaginationParams>,
        sorting: Option<&SortingParams>,
    ) -> Result<(Vec<T>, Option<PaginationMetadata>), Status> {
        let items: Vec<T> = state
            .catalog
            .list::<T>(project, tags)
            .filter(|o| keep(o))
            .cloned()
            .collect();
        let items = caller
            .filter(&state.catalog, project, items, |o| ResourceRef::of(o))
            .map_err(to_status)?;
        let (items, meta) = paginate(items, pagination, sorting, message_to_proto_json);
        Ok((items, Some(meta)))
    }

    async fn apply<T: RegistryObject>(
        &self,
        caller: Caller,
        object: Option<T>,
        project: &str,
        commit: bool,
    ) -> Result<Response<()>, Status> {
        let object =
            object.ok_or_else(|| invalid(format!("the request carries no {}", T::KIND)))?;
        self.mutate(commit, |catalog, now| {
            caller.upsert_object(catalog, project, &object)?;
            catalog.apply(object, project, now)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn delete<T: RegistryObject>(
        &self,
        caller: Caller,
        name: &str,
        project: &str,
        commit: bool,
    ) -> Result<Response<()>, Status> {
        self.mutate(commit, |catalog, _| {
            let stored = catalog.get::<T>(name, project)?;
            caller.check(catalog, project, ResourceRef::of(stored), &[Action::Delete])?;
            catalog.delete::<T>(name, project).map(drop)
        })
        .await?;
        Ok(Response::new(()))
    }

    fn check_size<M: Message>(&self, message: &M, what: &str) -> Result<(), Status> {
        self.check_bytes(
            message.encoded_len(),
            what,
            "use the List* RPCs (with pagination)",
        )
    }

    /// The same limit for a list response (its items' size).
    fn check_items<M: Message>(&self, items: &[M], what: &str) -> Result<(), Status> {
        let size = items.iter().map(|i| i.encoded_len() + 8).sum();
        self.check_bytes(
            size,
            what,
            "request it in pages (`pagination.page`/`limit`)",
        )
    }

    fn check_bytes(&self, size: usize, what: &str, advice: &str) -> Result<(), Status> {
        if size > self.options.max_response_bytes {
            return Err(Status::new(
                tonic::Code::ResourceExhausted,
                FeastError::new(
                    ErrorClass::FeastError,
                    format!(
                        "the {what} response would be {size} bytes, more than the {} bytes gRPC clients accept by \
                         default; {advice}",
                        self.options.max_response_bytes
                    ),
                )
                .to_error_detail(),
            ));
        }
        Ok(())
    }
}

/// `data_source_class_type` Feast's registry stamps on a source, from its type.
fn data_source_class(source: &core::DataSource) -> &'static str {
    use core::data_source::SourceType as T;
    match T::try_from(source.r#type) {
        Ok(T::BatchFile) => "feast.infra.offline_stores.file_source.FileSource",
        Ok(T::BatchBigquery) => "feast.infra.offline_stores.bigquery_source.BigQuerySource",
        Ok(T::BatchRedshift) => "feast.infra.offline_stores.redshift_source.RedshiftSource",
        Ok(T::BatchSnowflake) => "feast.infra.offline_stores.snowflake_source.SnowflakeSource",
        Ok(T::BatchTrino) => {
            "feast.infra.offline_stores.contrib.trino_offline_store.trino_source.TrinoSource"
        }
        Ok(T::BatchSpark) => {
            "feast.infra.offline_stores.contrib.spark_offline_store.spark_source.SparkSource"
        }
        Ok(T::BatchAthena) => {
            "feast.infra.offline_stores.contrib.athena_offline_store.athena_source.AthenaSource"
        }
        Ok(T::BatchIceberg) => {
            "feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source.IcebergSource"
        }
        Ok(T::StreamKafka) => "feast.data_source.KafkaSource",
        Ok(T::StreamKinesis) => "feast.data_source.KinesisSource",
        Ok(T::RequestSource) => "feast.data_source.RequestSource",
        Ok(T::PushSource) => "feast.data_source.PushSource",
        _ => "",
    }
}

fn any_view(view: AnyView) -> AnyFeatureView {
    use any_feature_view::AnyFeatureView as A;
    AnyFeatureView {
        any_feature_view: Some(match view {
            AnyView::Fv(v) => A::FeatureView(v),
            AnyView::Sfv(v) => A::StreamFeatureView(v),
            AnyView::Odfv(v) => A::OnDemandFeatureView(v),
            AnyView::Lv(v) => A::LabelView(v),
        }),
    }
}

/// A feature view of any kind, with what the filters of `ListAllFeatureViews` look at.
enum AnyView {
    Fv(core::FeatureView),
    Sfv(core::StreamFeatureView),
    Odfv(core::OnDemandFeatureView),
    Lv(core::LabelView),
}

impl AnyView {
    fn resource(&self) -> ResourceRef<'_> {
        match self {
            AnyView::Fv(v) => ResourceRef::of(v),
            AnyView::Sfv(v) => ResourceRef::of(v),
            AnyView::Odfv(v) => ResourceRef::of(v),
            AnyView::Lv(v) => ResourceRef::of(v),
        }
    }
    fn name(&self) -> &str {
        match self {
            AnyView::Fv(v) => v.name(),
            AnyView::Sfv(v) => v.name(),
            AnyView::Odfv(v) => v.name(),
            AnyView::Lv(v) => v.name(),
        }
    }
    fn entities(&self) -> Vec<&str> {
        match self {
            AnyView::Fv(v) => v
                .spec
                .iter()
                .flat_map(|s| s.entities.iter().map(String::as_str))
                .collect(),
            AnyView::Sfv(v) => v
                .spec
                .iter()
                .flat_map(|s| s.entities.iter().map(String::as_str))
                .collect(),
            AnyView::Odfv(v) => v
                .spec
                .iter()
                .flat_map(|s| s.entities.iter().map(String::as_str))
                .collect(),
            AnyView::Lv(v) => v
                .spec
                .iter()
                .flat_map(|s| s.entities.iter().map(String::as_str))
                .collect(),
        }
    }
    fn features(&self) -> &[core::FeatureSpecV2] {
        match self {
            AnyView::Fv(v) => v.spec.as_ref().map_or(&[], |s| &s.features),
            AnyView::Sfv(v) => v.spec.as_ref().map_or(&[], |s| &s.features),
            AnyView::Odfv(v) => v.spec.as_ref().map_or(&[], |s| &s.features),
            AnyView::Lv(v) => v.spec.as_ref().map_or(&[], |s| &s.features),
        }
    }
    fn source_names(&self) -> Vec<&str> {
        fn name(s: &Option<core::DataSource>) -> Option<&str> {
            s.as_ref().map(|d| d.name.as_str())
        }
        match self {
            AnyView::Fv(v) => v
                .spec
                .iter()
                .flat_map(|s| [name(&s.batch_source), name(&s.stream_source)])
                .flatten()
                .collect(),
            AnyView::Sfv(v) => v
                .spec
                .iter()
                .flat_map(|s| [name(&s.batch_source), name(&s.stream_source)])
                .flatten()
                .collect(),
            AnyView::Odfv(v) => v
                .spec
                .iter()
                .flat_map(|s| s.sources.values())
                .filter_map(|src| match &src.source {
                    Some(core::on_demand_source::Source::RequestDataSource(d)) => {
                        Some(d.name.as_str())
                    }
                    _ => None,
                })
                .collect(),
            AnyView::Lv(v) => v.spec.iter().filter_map(|s| name(&s.source)).collect(),
        }
    }
    fn last_updated(&self) -> Option<&Timestamp> {
        match self {
            AnyView::Fv(v) => v.last_updated_timestamp(),
            AnyView::Sfv(v) => v.last_updated_timestamp(),
            AnyView::Odfv(v) => v.last_updated_timestamp(),
            AnyView::Lv(v) => v.last_updated_timestamp(),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            AnyView::Fv(v) => message_to_proto_json(v),
            AnyView::Sfv(v) => message_to_proto_json(v),
            AnyView::Odfv(v) => message_to_proto_json(v),
            AnyView::Lv(v) => message_to_proto_json(v),
        }
    }
    fn owner_and_times(&self) -> (String, Option<Timestamp>, Option<Timestamp>) {
        match self {
            AnyView::Fv(v) => (
                v.spec.as_ref().map(|s| s.owner.clone()).unwrap_or_default(),
                v.created_timestamp().copied(),
                v.last_updated_timestamp().copied(),
            ),
            AnyView::Sfv(v) => (
                v.spec.as_ref().map(|s| s.owner.clone()).unwrap_or_default(),
                v.created_timestamp().copied(),
                v.last_updated_timestamp().copied(),
            ),
            AnyView::Odfv(v) => (
                v.spec.as_ref().map(|s| s.owner.clone()).unwrap_or_default(),
                v.created_timestamp().copied(),
                v.last_updated_timestamp().copied(),
            ),
            AnyView::Lv(v) => (
                v.spec.as_ref().map(|s| s.owner.clone()).unwrap_or_default(),
                v.created_timestamp().copied(),
                v.last_updated_timestamp().copied(),
            ),
        }
    }
}

/// Feature views of every kind in a project, in Feast's order (FV, SFV, ODFV, label views).
fn all_views(
    catalog: &Catalog,
    project: &str,
    tags: &BTreeMap<String, String>,
    with_labels: bool,
) -> Vec<AnyView> {
    let mut out: Vec<AnyView> = catalog
        .list::<core::FeatureView>(project, tags)
        .cloned()
        .map(AnyView::Fv)
        .collect();
    out.extend(
        catalog
            .list::<core::StreamFeatureView>(project, tags)
            .cloned()
            .map(AnyView::Sfv),
    );
    out.extend(
        catalog
            .list::<core::OnDemandFeatureView>(project, tags)
            .cloned()
            .map(AnyView::Odfv),
    );
    if with_labels {
        out.extend(
            catalog
                .list::<core::LabelView>(project, tags)
                .cloned()
                .map(AnyView::Lv),
        );
    }
    out
}

/// The views of every kind (label views included) in `project` the caller may describe.
fn permitted_views(
    caller: &Caller,
    catalog: &Catalog,
    project: &str,
) -> Result<Vec<AnyView>, Status> {
    let none = BTreeMap::new();
    caller
        .filter(
            catalog,
            project,
            all_views(catalog, project, &none, true),
            AnyView::resource,
        )
        .map_err(to_status)
}

/// `Proto` for a checked caller: the projects it may describe, and in each of them the
/// objects it may describe (Feast builds the message from per-project filtered lists).
fn permitted_registry(caller: &Caller, catalog: &Catalog, registry: &mut core::Registry) {
    let mut projects = Vec::new();
    for p in std::mem::take(&mut registry.projects) {
        let name = p.name().to_owned();
        projects.extend(caller.visible(catalog, &name, vec![p], |p| ResourceRef::of(p)));
    }
    let names: Vec<String> = projects.iter().map(|p| p.name().to_owned()).collect();
    registry.projects = projects;
    keep_permitted::<core::Entity>(caller, catalog, &names, registry);
    keep_permitted::<core::DataSource>(caller, catalog, &names, registry);
    keep_permitted::<core::FeatureView>(caller, catalog, &names, registry);
    keep_permitted::<core::StreamFeatureView>(caller, catalog, &names, registry);
    keep_permitted::<core::OnDemandFeatureView>(caller, catalog, &names, registry);
    keep_permitted::<core::LabelView>(caller, catalog, &names, registry);
    keep_permitted::<core::FeatureService>(caller, catalog, &names, registry);
    keep_permitted::<core::SavedDataset>(caller, catalog, &names, registry);
    keep_permitted::<core::ValidationReference>(caller, catalog, &names, registry);
    keep_permitted::<core::Permission>(caller, catalog, &names, registry);
}

fn keep_permitted<T: RegistryObject>(
    caller: &Caller,
    catalog: &Catalog,
    projects: &[String],
    registry: &mut core::Registry,
) {
    let all = std::mem::take(T::collection_mut(registry));
    let mut kept = Vec::with_capacity(all.len());
    for project in projects {
        let of_project: Vec<T> = all
            .iter()
            .filter(|o| o.project() == project)
            .cloned()
            .collect();
        kept.extend(caller.visible(catalog, project, of_project, |o| ResourceRef::of(o)));
    }
    *T::collection_mut(registry) = kept;
}

fn features_of(views: Vec<AnyView>, feature_view: &str, name: &str, kind: &str) -> Vec<Feature> {
    let mut out = Vec::new();
    for view in views {
        let view_kind = if matches!(view, AnyView::Lv(_)) {
            "label"
        } else {
            "feature"
        };
        if (!kind.is_empty() && kind != view_kind)
            || (!feature_view.is_empty() && view.name() != feature_view)
        {
            continue;
        }
        let (owner, created, updated) = view.owner_and_times();
        for f in view.features() {
            if !name.is_empty() && f.name != name {
                continue;
            }
            out.push(Feature {
                name: f.name.clone(),
                feature_view: view.name().to_owned(),
                r#type: ValueType::try_from(f.value_type)
                    .map(dtype_name)
                    .unwrap_or_default(),
                description: f.description.clone(),
                owner: owner.clone(),
                created_timestamp: created,
                last_updated_timestamp: updated,
                tags: f.tags.clone(),
                kind: view_kind.to_owned(),
            });
        }
    }
    out
}

/// The fields every plain `List*` request shares.
trait ListRequest {
    fn project(&self) -> &str;
    fn allow_cache(&self) -> bool;
    fn tags(&self) -> &BTreeMap<String, String>;
    fn pagination(&self) -> Option<&PaginationParams>;
    fn sorting(&self) -> Option<&SortingParams>;
}

macro_rules! list_requests {
    ($($request:ty),* $(,)?) => {$(
        impl ListRequest for $request {
            fn project(&self) -> &str { &self.project }
            fn allow_cache(&self) -> bool { self.allow_cache }
            fn tags(&self) -> &BTreeMap<String, String> { &self.tags }
            fn pagination(&self) -> Option<&PaginationParams> { self.pagination.as_ref() }
            fn sorting(&self) -> Option<&SortingParams> { self.sorting.as_ref() }
        }
    )*};
}

list_requests!(
    ListEntitiesRequest,
    ListDataSourcesRequest,
    ListFeatureViewsRequest,
    ListStreamFeatureViewsRequest,
    ListOnDemandFeatureViewsRequest,
    ListLabelViewsRequest,
    ListValidationReferencesRequest,
    ListPermissionsRequest,
);

/// A failed status's message for a job's error: the Feast envelope's message, else the
/// status message.
fn status_text(status: &Status) -> String {
    crate::client::feast_error_of(status)
        .map(|e| e.message)
        .unwrap_or_else(|| status.message().to_owned())
}

fn unimplemented_rpc(rpc: &str, reason: &str) -> Status {
    Status::new(
        tonic::Code::Unimplemented,
        FeastError::new(
            ErrorClass::FeastError,
            format!("{rpc} is not implemented by feast-rs yet: {reason}"),
        )
        .to_error_detail(),
    )
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RegistryServer for RegistryService {
    async fn apply_entity(&self, request: Request<ApplyEntityRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.apply(caller, r.entity, &r.project, r.commit).await
    }
    async fn get_entity(&self, request: Request<GetEntityRequest>) -> R<core::Entity> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_entities(
        &self,
        request: Request<ListEntitiesRequest>,
    ) -> R<ListEntitiesResponse> {
        let (entities, pagination) = self.list_std::<core::Entity, _>(&request).await?;
        Ok(Response::new(ListEntitiesResponse {
            entities,
            pagination,
        }))
    }
    async fn delete_entity(&self, request: Request<DeleteEntityRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::Entity>(caller, &r.name, &r.project, r.commit)
            .await
    }

    async fn apply_data_source(&self, request: Request<ApplyDataSourceRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let mut source = r
            .data_source
            .ok_or_else(|| invalid("the request carries no data source"))?;
        if source.data_source_class_type.is_empty() {
            source.data_source_class_type = data_source_class(&source).to_owned();
        }
        let project = r.project;
        self.mutate(r.commit, |catalog, now| {
            caller.upsert_object(catalog, &project, &source)?;
            // An unchanged source is left as it is (timestamps included), as Feast does.
            if let Ok(existing) = catalog.get::<core::DataSource>(&source.name, &project)
                && existing.declared() == source.declared()
            {
                return Ok(());
            }
            catalog.apply(source, &project, now)
        })
        .await?;
        Ok(Response::new(()))
    }
    async fn get_data_source(&self, request: Request<GetDataSourceRequest>) -> R<core::DataSource> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_data_sources(
        &self,
        request: Request<ListDataSourcesRequest>,
    ) -> R<ListDataSourcesResponse> {
        let (data_sources, pagination) = self.list_std::<core::DataSource, _>(&request).await?;
        Ok(Response::new(ListDataSourcesResponse {
            data_sources,
            pagination,
        }))
    }
    async fn delete_data_source(&self, request: Request<DeleteDataSourceRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::DataSource>(caller, &r.name, &r.project, r.commit)
            .await
    }

    async fn apply_feature_view(&self, request: Request<ApplyFeatureViewRequest>) -> R<()> {
        use apply_feature_view_request::BaseFeatureView as B;
        let c = self.caller(&request)?;
        let r = request.into_inner();
        match r.base_feature_view {
            Some(B::FeatureView(v)) => self.apply(c, Some(v), &r.project, r.commit).await,
            Some(B::OnDemandFeatureView(v)) => self.apply(c, Some(v), &r.project, r.commit).await,
            Some(B::StreamFeatureView(v)) => self.apply(c, Some(v), &r.project, r.commit).await,
            Some(B::LabelView(v)) => self.apply(c, Some(v), &r.project, r.commit).await,
            None => Err(invalid(
                "ApplyFeatureView needs one of feature_view, on_demand_feature_view, stream_feature_view or label_view",
            )),
        }
    }
    async fn delete_feature_view(&self, request: Request<DeleteFeatureViewRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.mutate(r.commit, |catalog, _| {
            let none = BTreeMap::new();
            let stored = all_views(catalog, &r.project, &none, true)
                .into_iter()
                .find(|v| v.name() == r.name)
                .ok_or_else(|| ObjectKind::FeatureView.not_found(&r.name, &r.project))?;
            caller.check(catalog, &r.project, stored.resource(), &[Action::Delete])?;
            catalog
                .delete_any_feature_view(&r.name, &r.project)
                .map(drop)
        })
        .await?;
        Ok(Response::new(()))
    }
    async fn get_any_feature_view(
        &self,
        request: Request<GetAnyFeatureViewRequest>,
    ) -> R<GetAnyFeatureViewResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let none = BTreeMap::new();
        let found = all_views(&state.catalog, &r.project, &none, true)
            .into_iter()
            .find(|v| v.name() == r.name);
        if let Some(v) = &found {
            caller
                .check(
                    &state.catalog,
                    &r.project,
                    v.resource(),
                    &[Action::Describe],
                )
                .map_err(to_status)?;
        }
        match found {
            Some(v) => Ok(Response::new(GetAnyFeatureViewResponse {
                any_feature_view: Some(any_view(v)),
            })),
            None => Err(to_status(
                ObjectKind::FeatureView.not_found(&r.name, &r.project),
            )),
        }
    }
    async fn list_all_feature_views(
        &self,
        request: Request<ListAllFeatureViewsRequest>,
    ) -> R<ListAllFeatureViewsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let mut views = all_views(&state.catalog, &r.project, &r.tags, false);
        if let Some(cutoff) = r.updated_since {
            let key = |t: &Timestamp| (t.seconds, t.nanos);
            views.retain(|v| v.last_updated().is_some_and(|t| key(t) >= key(&cutoff)));
        }
        if !r.entity.is_empty() {
            views.retain(|v| v.entities().contains(&r.entity.as_str()));
        }
        if !r.feature.is_empty() {
            views.retain(|v| v.features().iter().any(|f| f.name == r.feature));
        }
        if !r.feature_service.is_empty() {
            let service =
                Self::get::<core::FeatureService>(&state, &r.feature_service, &r.project)?;
            caller
                .describe(&state.catalog, &r.project, &service)
                .map_err(to_status)?;
            let in_service: Vec<String> = service
                .spec
                .iter()
                .flat_map(|s| s.features.iter().map(|p| p.feature_view_name.clone()))
                .collect();
            views.retain(|v| in_service.iter().any(|n| n == v.name()));
        }
        if !r.data_source.is_empty() {
            views.retain(|v| v.source_names().contains(&r.data_source.as_str()));
        }
        let views = caller
            .filter(&state.catalog, &r.project, views, AnyView::resource)
            .map_err(to_status)?;
        let (views, pagination) = paginate(
            views,
            r.pagination.as_ref(),
            r.sorting.as_ref(),
            AnyView::json,
        );
        let feature_views: Vec<AnyFeatureView> = views.into_iter().map(any_view).collect();
        self.check_items(&feature_views, "ListAllFeatureViews")?;
        Ok(Response::new(ListAllFeatureViewsResponse {
            feature_views,
            pagination: Some(pagination),
        }))
    }
    async fn get_feature_view(
        &self,
        request: Request<GetFeatureViewRequest>,
    ) -> R<core::FeatureView> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_feature_views(
        &self,
        request: Request<ListFeatureViewsRequest>,
    ) -> R<ListFeatureViewsResponse> {
        let (feature_views, pagination) = self.list_std::<core::FeatureView, _>(&request).await?;
        Ok(Response::new(ListFeatureViewsResponse {
            feature_views,
            pagination,
        }))
    }
    async fn get_stream_feature_view(
        &self,
        request: Request<GetStreamFeatureViewRequest>,
    ) -> R<core::StreamFeatureView> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_stream_feature_views(
        &self,
        request: Request<ListStreamFeatureViewsRequest>,
    ) -> R<ListStreamFeatureViewsResponse> {
        let (stream_feature_views, pagination) = self
            .list_std::<core::StreamFeatureView, _>(&request)
            .await?;
        Ok(Response::new(ListStreamFeatureViewsResponse {
            stream_feature_views,
            pagination,
        }))
    }
    async fn get_on_demand_feature_view(
        &self,
        request: Request<GetOnDemandFeatureViewRequest>,
    ) -> R<core::OnDemandFeatureView> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_on_demand_feature_views(
        &self,
        request: Request<ListOnDemandFeatureViewsRequest>,
    ) -> R<ListOnDemandFeatureViewsResponse> {
        let (on_demand_feature_views, pagination) = self
            .list_std::<core::OnDemandFeatureView, _>(&request)
            .await?;
        Ok(Response::new(ListOnDemandFeatureViewsResponse {
            on_demand_feature_views,
            pagination,
        }))
    }
    async fn get_label_view(&self, request: Request<GetLabelViewRequest>) -> R<core::LabelView> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_label_views(
        &self,
        request: Request<ListLabelViewsRequest>,
    ) -> R<ListLabelViewsResponse> {
        let (label_views, pagination) = self.list_std::<core::LabelView, _>(&request).await?;
        Ok(Response::new(ListLabelViewsResponse {
            label_views,
            pagination,
        }))
    }

    async fn apply_feature_service(&self, request: Request<ApplyFeatureServiceRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.apply(caller, r.feature_service, &r.project, r.commit)
            .await
    }
    async fn get_feature_service(
        &self,
        request: Request<GetFeatureServiceRequest>,
    ) -> R<core::FeatureService> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_feature_services(
        &self,
        request: Request<ListFeatureServicesRequest>,
    ) -> R<ListFeatureServicesResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let view = r.feature_view.as_str();
        let (feature_services, pagination) = Self::list::<core::FeatureService>(
            &state,
            &caller,
            &r.project,
            &r.tags,
            |s| {
                view.is_empty()
                    || s.spec
                        .iter()
                        .flat_map(|s| &s.features)
                        .any(|p| p.feature_view_name == view)
            },
            r.pagination.as_ref(),
            r.sorting.as_ref(),
        )?;
        self.check_items(&feature_services, "ListFeatureServices")?;
        Ok(Response::new(ListFeatureServicesResponse {
            feature_services,
            pagination,
        }))
    }
    async fn delete_feature_service(&self, request: Request<DeleteFeatureServiceRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::FeatureService>(caller, &r.name, &r.project, r.commit)
            .await
    }

    async fn apply_saved_dataset(&self, request: Request<ApplySavedDatasetRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.apply(caller, r.saved_dataset, &r.project, r.commit)
            .await
    }
    async fn get_saved_dataset(
        &self,
        request: Request<GetSavedDatasetRequest>,
    ) -> R<core::SavedDataset> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_saved_datasets(
        &self,
        request: Request<ListSavedDatasetsRequest>,
    ) -> R<ListSavedDatasetsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let (saved_datasets, pagination) = Self::list::<core::SavedDataset>(
            &state,
            &caller,
            &r.project,
            &r.tags,
            |d| {
                let spec = d.spec.clone().unwrap_or_default();
                (r.namespace.is_empty() || spec.namespace == r.namespace)
                    && (r.collection.is_empty() || spec.collection == r.collection)
            },
            r.pagination.as_ref(),
            r.sorting.as_ref(),
        )?;
        self.check_items(&saved_datasets, "ListSavedDatasets")?;
        Ok(Response::new(ListSavedDatasetsResponse {
            saved_datasets,
            pagination,
        }))
    }
    async fn delete_saved_dataset(&self, request: Request<DeleteSavedDatasetRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::SavedDataset>(caller, &r.name, &r.project, r.commit)
            .await
    }
    async fn create_dataset_from_retrieval(
        &self,
        request: Request<CreateDatasetFromRetrievalRequest>,
    ) -> R<CreateDatasetFromRetrievalResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        if caller.is_checked() {
            let state = self.view(true).await?;
            let target = ResourceRef::new(ResourceKind::SavedDataset, &r.name);
            caller
                .check(&state.catalog, &r.project, target, &[Action::Create])
                .map_err(to_status)?;
        }
        let backend = self.backend()?;
        let service = self
            .me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| {
                unimplemented_rpc(
                    "CreateDatasetFromRetrieval",
                    "the service is not shared (RegistryService::shared)",
                )
            })?;
        let name = r.name.trim().to_owned();
        let project = r.project.trim().to_owned();
        let job = self.jobs.submit(&name, &project);
        let job_id = job.job_id.clone();
        tracing::info!(message = "dataset job submitted", job_id = %job_id, dataset = %name, project = %project);
        tokio::spawn(async move {
            let jobs = service.jobs.clone();
            let Ok(_slot) = jobs.slots.acquire().await else {
                return;
            };
            jobs.running(&job_id);
            let outcome = async {
                let catalog = service
                    .view(false)
                    .await
                    .map_err(|s| status_text(&s))?
                    .catalog
                    .clone();
                let dataset = backend.create(catalog, r).await.map_err(|e| e.message)?;
                service
                    .mutate(true, |catalog, now| catalog.apply(dataset, &project, now))
                    .await
                    .map_err(|s| status_text(&s))
            }
            .await;
            match &outcome {
                Ok(()) => {
                    tracing::info!(message = "dataset job completed", job_id = %job_id, dataset = %name)
                }
                Err(e) => {
                    tracing::warn!(message = "dataset job failed", job_id = %job_id, dataset = %name, error = %e)
                }
            }
            jobs.finish(&job_id, outcome);
        });
        Ok(Response::new(CreateDatasetFromRetrievalResponse {
            job_id: job.job_id,
            status: job.status,
        }))
    }
    async fn get_dataset_data(
        &self,
        request: Request<GetDatasetDataRequest>,
    ) -> R<GetDatasetDataResponse> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        let dataset = {
            let state = self.view(true).await?;
            let dataset = Self::get::<core::SavedDataset>(&state, &r.name, &r.project)?;
            caller
                .check(
                    &state.catalog,
                    &r.project,
                    ResourceRef::of(&dataset),
                    &[Action::ReadOffline],
                )
                .map_err(to_status)?;
            dataset
        };
        let limit = if r.limit > 0 { r.limit as usize } else { 10 };
        let preview = self.backend()?.preview(dataset, limit).await.map_err(|e| {
            to_status(FeastError::new(
                e.class,
                format!(
                    "Unable to load preview for dataset '{}': {}",
                    r.name, e.message
                ),
            ))
        })?;
        if preview.rows.is_empty() {
            return Ok(Response::new(GetDatasetDataResponse::default()));
        }
        let n = preview.rows.len() as i32;
        Ok(Response::new(GetDatasetDataResponse {
            columns: preview.columns,
            rows: preview
                .rows
                .into_iter()
                .map(|values| TabularRow { values })
                .collect(),
            total_rows: n,
            sample_size: n,
        }))
    }
    async fn get_dataset_job_status(
        &self,
        request: Request<GetDatasetJobStatusRequest>,
    ) -> R<GetDatasetJobStatusResponse> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        let Some(job) = self.jobs.get(&r.job_id) else {
            return Err(to_status(FeastError::new(
                ErrorClass::FeastObjectNotFoundException,
                format!("Dataset job '{}' not found", r.job_id),
            )));
        };
        if caller.is_checked() {
            let state = self.view(true).await?;
            caller
                .describe(
                    &state.catalog,
                    &job.project,
                    &dummy_dataset(&job.dataset_name),
                )
                .map_err(to_status)?;
        }
        Ok(Response::new(job))
    }
    async fn list_dataset_jobs(
        &self,
        request: Request<ListDatasetJobsRequest>,
    ) -> R<ListDatasetJobsResponse> {
        let caller = self.caller(&request)?;
        let r = request.get_ref();
        // An unknown status filter is ignored, as Feast's.
        let status = JobStatus::parse(&r.status_filter);
        let project = (!r.project.is_empty()).then_some(r.project.as_str());
        let mut jobs = self.jobs.list(project, status);
        if caller.is_checked() {
            let state = self.view(true).await?;
            jobs.retain(|j| {
                caller
                    .describe(&state.catalog, &j.project, &dummy_dataset(&j.dataset_name))
                    .is_ok()
            });
        }
        Ok(Response::new(ListDatasetJobsResponse { jobs }))
    }

    async fn apply_validation_reference(
        &self,
        request: Request<ApplyValidationReferenceRequest>,
    ) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.apply(caller, r.validation_reference, &r.project, r.commit)
            .await
    }
    async fn get_validation_reference(
        &self,
        request: Request<GetValidationReferenceRequest>,
    ) -> R<core::ValidationReference> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_validation_references(
        &self,
        request: Request<ListValidationReferencesRequest>,
    ) -> R<ListValidationReferencesResponse> {
        let (validation_references, pagination) = self
            .list_std::<core::ValidationReference, _>(&request)
            .await?;
        Ok(Response::new(ListValidationReferencesResponse {
            validation_references,
            pagination,
        }))
    }
    async fn delete_validation_reference(
        &self,
        request: Request<DeleteValidationReferenceRequest>,
    ) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::ValidationReference>(caller, &r.name, &r.project, r.commit)
            .await
    }

    async fn apply_permission(&self, request: Request<ApplyPermissionRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.apply(caller, r.permission, &r.project, r.commit).await
    }
    async fn get_permission(&self, request: Request<GetPermissionRequest>) -> R<core::Permission> {
        self.get_rpc(request, |r| (&r.name, &r.project, r.allow_cache))
            .await
    }
    async fn list_permissions(
        &self,
        request: Request<ListPermissionsRequest>,
    ) -> R<ListPermissionsResponse> {
        let (permissions, pagination) = self.list_std::<core::Permission, _>(&request).await?;
        Ok(Response::new(ListPermissionsResponse {
            permissions,
            pagination,
        }))
    }
    async fn delete_permission(&self, request: Request<DeletePermissionRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.delete::<core::Permission>(caller, &r.name, &r.project, r.commit)
            .await
    }

    async fn apply_project(&self, request: Request<ApplyProjectRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let project = r
            .project
            .ok_or_else(|| invalid("the request carries no project"))?;
        let name = project.name().to_owned();
        self.apply(caller, Some(project), &name, r.commit).await
    }
    async fn get_project(&self, request: Request<GetProjectRequest>) -> R<core::Project> {
        self.get_rpc(request, |r| (&r.name, &r.name, r.allow_cache))
            .await
    }
    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> R<ListProjectsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let mut permitted = Vec::new();
        for p in state.catalog.projects(&r.tags) {
            // Each project is weighed against its own permissions.
            permitted
                .extend(caller.visible(&state.catalog, p.name(), vec![p], |p| ResourceRef::of(*p)));
        }
        let projects: Vec<core::Project> = permitted
            .into_iter()
            .filter(|p| {
                p.tags()
                    .get("feast.dev/protected-project")
                    .map(String::as_str)
                    != Some("true")
            })
            .cloned()
            .collect();
        let (projects, pagination) = paginate(
            projects,
            r.pagination.as_ref(),
            r.sorting.as_ref(),
            message_to_proto_json,
        );
        self.check_items(&projects, "ListProjects")?;
        Ok(Response::new(ListProjectsResponse {
            projects,
            pagination: Some(pagination),
        }))
    }
    async fn delete_project(&self, request: Request<DeleteProjectRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        self.mutate(r.commit, |catalog, _| {
            let stored = catalog.get::<core::Project>(&r.name, &r.name)?;
            caller.check(catalog, &r.name, ResourceRef::of(stored), &[Action::Delete])?;
            catalog.delete_project(&r.name)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn apply_materialization(&self, request: Request<ApplyMaterializationRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let name = r
            .feature_view
            .as_ref()
            .map(|v| v.name().to_owned())
            .unwrap_or_default();
        let (start, end) = (
            r.start_date.unwrap_or_default(),
            r.end_date.unwrap_or_default(),
        );
        self.mutate(r.commit, |catalog, now| {
            // The stored view decides (its tags, not the caller's copy of them).
            let write = [Action::WriteOnline];
            if let Ok(fv) = catalog.get::<core::FeatureView>(&name, &r.project) {
                caller.check(catalog, &r.project, ResourceRef::of(fv), &write)?;
            } else if let Ok(sfv) = catalog.get::<core::StreamFeatureView>(&name, &r.project) {
                caller.check(catalog, &r.project, ResourceRef::of(sfv), &write)?;
            } else {
                let sent = ResourceRef::new(ResourceKind::FeatureView, &name);
                caller.check(catalog, &r.project, sent, &write)?;
            }
            catalog.apply_materialization(&name, &r.project, start, end, now);
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }
    async fn list_project_metadata(
        &self,
        request: Request<ListProjectMetadataRequest>,
    ) -> R<ListProjectMetadataResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        caller
            .describe_project_if_any(&state.catalog, &r.project)
            .map_err(to_status)?;
        #[allow(deprecated)]
        let project_metadata = state
            .catalog
            .proto()
            .project_metadata
            .iter()
            .filter(|m| m.project == r.project)
            .cloned()
            .collect();
        Ok(Response::new(ListProjectMetadataResponse {
            project_metadata,
        }))
    }
    async fn update_infra(&self, request: Request<UpdateInfraRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let infra = r.infra.unwrap_or_default();
        self.mutate(r.commit, |catalog, now| {
            caller.upsert_project(catalog, &r.project)?;
            catalog.ensure_project(&r.project, now);
            catalog.set_infra(infra);
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }
    async fn get_infra(&self, request: Request<GetInfraRequest>) -> R<core::Infra> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        match state.catalog.get::<core::Project>(&r.project, &r.project) {
            Ok(p) => caller.describe(&state.catalog, &r.project, p),
            Err(_) => caller.check(
                &state.catalog,
                &r.project,
                ResourceRef::new(ResourceKind::Project, &r.project),
                &[Action::Create],
            ),
        }
        .map_err(to_status)?;
        Ok(Response::new(
            state.catalog.proto().infra.clone().unwrap_or_default(),
        ))
    }
    async fn commit(&self, request: Request<()>) -> R<()> {
        let caller = self.caller(&request)?;
        let mut state = self.state.write().await;
        caller.may_commit(&state.catalog).map_err(to_status)?;
        self.persist(&mut state).await?;
        Ok(Response::new(()))
    }
    async fn refresh(&self, request: Request<RefreshRequest>) -> R<()> {
        let caller = self.caller(&request)?;
        if caller.is_checked() {
            let state = self.state.read().await;
            caller
                .upsert_project(&state.catalog, &request.get_ref().project)
                .map_err(to_status)?;
        }
        // Feast's refresh reloads from the store, dropping staged changes.
        let (loaded, version) = self.store.load().await.map_err(store_status)?;
        let mut state = self.state.write().await;
        state.catalog = loaded.map(Catalog::from_proto).unwrap_or_default();
        state.version = version;
        state.dirty = false;
        Ok(Response::new(()))
    }
    async fn proto(&self, request: Request<()>) -> R<core::Registry> {
        let caller = self.caller(&request)?;
        let state = self.view(false).await?;
        let mut registry = state.catalog.proto().clone();
        if caller.is_checked() {
            permitted_registry(&caller, &state.catalog, &mut registry);
        }
        // As Feast's server: objects and projects, with the real version and time.
        registry.infra = None;
        #[allow(deprecated)]
        registry.project_metadata.clear();
        registry.feature_view_version_history = None;
        self.check_size(&registry, "Proto")?;
        Ok(Response::new(registry))
    }

    async fn get_registry_lineage(
        &self,
        request: Request<GetRegistryLineageRequest>,
    ) -> R<GetRegistryLineageResponse> {
        // Feast checks DESCRIBE on the project and ignores a missing project.
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let lineage = {
            let state = self.view(r.allow_cache).await?;
            caller
                .describe_project_if_any(&state.catalog, &r.project)
                .map_err(to_status)?;
            lineage::registry_lineage(&state.catalog, &r.project)
        }
        .filtered(&r.filter_object_type, &r.filter_object_name);
        let page = |relations: Vec<lineage::Relation>| {
            paginate(
                relations.iter().map(lineage::Relation::to_proto).collect(),
                r.pagination.as_ref(),
                r.sorting.as_ref(),
                lineage::sort_view,
            )
        };
        let (relationships, relationships_pagination) = page(lineage.direct);
        let (indirect_relationships, indirect_relationships_pagination) = page(lineage.indirect);
        let response = GetRegistryLineageResponse {
            relationships,
            indirect_relationships,
            relationships_pagination: Some(relationships_pagination),
            indirect_relationships_pagination: Some(indirect_relationships_pagination),
        };
        Ok(Response::new(response))
    }
    async fn get_object_relationships(
        &self,
        request: Request<GetObjectRelationshipsRequest>,
    ) -> R<GetObjectRelationshipsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let relations = {
            let state = self.view(r.allow_cache).await?;
            caller
                .describe_project_if_any(&state.catalog, &r.project)
                .map_err(to_status)?;
            lineage::object_relationships(
                &state.catalog,
                &r.project,
                &r.object_type,
                &r.object_name,
                r.include_indirect,
            )
        }
        // Feast raises a plain ValueError here, which grpcio answers with UNKNOWN.
        .map_err(|e| {
            Status::new(
                tonic::Code::Unknown,
                format!("Exception calling application: {e}"),
            )
        })?;
        let (relationships, pagination) = paginate(
            relations.iter().map(lineage::Relation::to_proto).collect(),
            r.pagination.as_ref(),
            r.sorting.as_ref(),
            lineage::sort_view,
        );
        let response = GetObjectRelationshipsResponse {
            relationships,
            pagination: Some(pagination),
        };
        Ok(Response::new(response))
    }

    async fn list_features(
        &self,
        request: Request<ListFeaturesRequest>,
    ) -> R<ListFeaturesResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let views = permitted_views(&caller, &state.catalog, &r.project)?;
        let features = features_of(views, &r.feature_view, &r.name, &r.kind);
        let (features, pagination) = paginate(
            features,
            r.pagination.as_ref(),
            r.sorting.as_ref(),
            message_to_proto_json,
        );
        self.check_items(&features, "ListFeatures")?;
        Ok(Response::new(ListFeaturesResponse {
            features,
            pagination: Some(pagination),
        }))
    }
    async fn get_feature(&self, request: Request<GetFeatureRequest>) -> R<Feature> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let state = self.view(r.allow_cache).await?;
        let views = permitted_views(&caller, &state.catalog, &r.project)?;
        let found = features_of(views, &r.feature_view, &r.name, "");
        match found.into_iter().next() {
            Some(f) => Ok(Response::new(f)),
            None => Err(to_status(FeastError::new(
                ErrorClass::FeastObjectNotFoundException,
                format!(
                    "Feature {} not found in feature view {} in project {}",
                    r.name, r.feature_view, r.project
                ),
            ))),
        }
    }
}
