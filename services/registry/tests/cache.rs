//! RegistryCache: reads never wait on I/O, refreshes pick up changes (in the background and
//! on demand), and an unreachable source leaves the last good registry serving.

use std::time::Duration;

use feast_core::registry::{Catalog, timestamp};
use feast_proto::core;
use feast_registry::{
    CacheSource, FileStore, RegistryCache, RegistryService, RemoteOptions, RemoteRegistry,
    ServiceOptions,
};
use prost::Message;

fn registry_with(entities: &[&str]) -> core::Registry {
    let mut catalog = Catalog::new();
    let now = timestamp(chrono::Utc::now());
    for name in entities {
        let entity = core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: (*name).into(),
                join_key: "id".into(),
                ..Default::default()
            }),
            meta: None,
        };
        catalog.apply(entity, "demo", now).unwrap();
    }
    catalog.stamp_commit(now);
    catalog.into_proto()
}

fn entity_names(cache: &RegistryCache) -> Vec<String> {
    let snapshot = cache.snapshot().expect("a registry was loaded");
    let mut names: Vec<String> = snapshot
        .registry()
        .entities
        .iter()
        .map(|e| e.spec.as_ref().unwrap().name.clone())
        .collect();
    names.sort();
    names
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn file_source_refreshes_in_the_background_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::fs::write(&path, registry_with(&["a"]).encode_to_vec()).unwrap();
    let cache = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(&path))),
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(entity_names(&cache), ["a"]);
    assert_eq!(cache.stats().reloads, 1);

    std::fs::write(&path, registry_with(&["a", "b"]).encode_to_vec()).unwrap();
    eventually("the background refresh", || {
        entity_names(&cache) == ["a", "b"]
    })
    .await;

    // A refresh with nothing changed does not reload.
    let reloads = cache.stats().reloads;
    cache.refresh().await.unwrap();
    assert_eq!(cache.stats().reloads, reloads);

    // A broken registry file: the last good registry keeps serving, failures are counted.
    std::fs::write(&path, b"\xff\xff not a registry").unwrap();
    let failures = cache.stats().failures;
    assert!(cache.refresh().await.is_err());
    assert!(cache.stats().failures > failures);
    assert_eq!(entity_names(&cache), ["a", "b"]);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        cache.staleness().unwrap() >= Duration::from_millis(100),
        "staleness grows while failing"
    );

    std::fs::write(&path, registry_with(&["c"]).encode_to_vec()).unwrap();
    eventually("recovery", || entity_names(&cache) == ["c"]).await;
    assert!(cache.staleness().unwrap() < Duration::from_secs(1));
}

#[tokio::test]
async fn remote_source_keeps_serving_while_the_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::fs::write(&path, registry_with(&["a"]).encode_to_vec()).unwrap();

    let start_server = |path: std::path::PathBuf, listener: std::net::TcpListener| async move {
        let service =
            RegistryService::open(Box::new(FileStore::new(path)), ServiceOptions::default())
                .await
                .unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
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
        (stop, handle)
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, handle) = start_server(path.clone(), listener).await;

    let client = RemoteRegistry::connect(&RemoteOptions {
        target: addr.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cache = RegistryCache::start(
        CacheSource::Remote {
            client: Box::new(client),
            project: "demo".into(),
        },
        Duration::ZERO,
    )
    .await;
    assert_eq!(entity_names(&cache), ["a"]);

    let _ = stop.send(());
    handle.await.unwrap();
    assert!(cache.refresh().await.is_err(), "the server is down");
    assert_eq!(
        entity_names(&cache),
        ["a"],
        "the last good registry is served"
    );

    // The server comes back (same address) with a changed registry: the cache recovers.
    std::fs::write(&path, registry_with(&["a", "b"]).encode_to_vec()).unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let (stop, handle) = start_server(path.clone(), listener).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.refresh().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entity_names(&cache), ["a", "b"]);
    let _ = stop.send(());
    handle.await.unwrap();
}

#[tokio::test]
async fn a_source_unreachable_at_start_leaves_the_cache_empty_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::fs::write(&path, b"garbage").unwrap();
    let cache = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(&path))),
        Duration::ZERO,
    )
    .await;
    assert!(cache.snapshot().is_none());
    assert!(cache.staleness().is_none());
    std::fs::write(&path, registry_with(&["x"]).encode_to_vec()).unwrap();
    cache.refresh().await.unwrap();
    assert_eq!(entity_names(&cache), ["x"]);
}
