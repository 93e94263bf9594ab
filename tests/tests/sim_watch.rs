//! Watches against snapmend-sim: resourceVersion semantics, 410 Expired, bookmarks,
//! timeoutSeconds, sendInitialEvents, and kube-runtime's watcher and reflector recovering
//! from a server-side expiry.

// Helpers outside #[test] functions unwrap too: a panic is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ListParams, Patch, PatchParams, PostParams, ResourceExt, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use snapmend_tests::sim::{SimConfig, SimServer};

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a watch event within 5s")
        .expect("the stream is open")
        .expect("a decodable event")
}

#[tokio::test]
async fn watch_resumes_from_a_version_and_expires_when_it_is_too_old() {
    let sim = SimServer::start_with(SimConfig {
        history_window: 3,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().unwrap());
    let first = cms
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let rv = first.resource_version().unwrap();
    cms.create(&PostParams::default(), &config_map("b", json!({})))
        .await
        .unwrap();

    let mut from_rv = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut from_rv).await {
        WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "b", "only changes after the version"),
        other => panic!("unexpected {other:?}"),
    }
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    match next_event(&mut from_rv).await {
        WatchEvent::Modified(cm) => assert_eq!(cm.data.unwrap()["k"], "v2"),
        other => panic!("unexpected {other:?}"),
    }

    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("x{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let mut expired = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut expired).await {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    sim.stop().await;
}

#[tokio::test]
async fn bookmarks_timeouts_selector_transitions_and_initial_events() {
    let sim = SimServer::start_with(SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().unwrap());
    cms.create(
        &PostParams::default(),
        &config_map("web", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let mut selected = cms
        .watch(&WatchParams::default().labels("app=web").timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    let mut saw_delete = false;
    let mut saw_bookmark = false;
    let started = std::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), selected.next())
        .await
        .unwrap()
    {
        match ev.unwrap() {
            WatchEvent::Deleted(cm) => {
                assert_eq!(cm.name_any(), "web");
                saw_delete = true;
            }
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                saw_bookmark = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_delete, "leaving the selector is a DELETED event");
    assert!(saw_bookmark, "bookmarks were asked for");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(4),
        "timeoutSeconds=2 ended the watch after {elapsed:?}"
    );

    let mut streaming = cms
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    match next_event(&mut streaming).await {
        WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "web"),
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&mut streaming).await {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    sim.stop().await;
}

/// Runs a reflector and reports each watcher event kind; returns the store.
fn spawn_reflector(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> (
    reflector::Store<ConfigMap>,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let (reader, writer) = reflector::store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(ev) = stream.next().await {
            let kind = match ev {
                Ok(watcher::Event::Init) => "init",
                Ok(watcher::Event::InitApply(_)) => "init-apply",
                Ok(watcher::Event::InitDone) => "init-done",
                Ok(watcher::Event::Apply(_)) => "apply",
                Ok(watcher::Event::Delete(_)) => "delete",
                Err(_) => "error",
            };
            if tx.send(kind).is_err() {
                return;
            }
        }
    });
    (reader, rx)
}

async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>, want: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(k) = rx.recv().await {
            if k == want {
                return;
            }
        }
        panic!("watcher stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no {want} event within 10s"));
}

async fn store_names(store: &reflector::Store<ConfigMap>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|c| c.name_any()).collect();
    names.sort();
    names
}

async fn expire_while_disconnected(
    sim: &SimServer,
    cms: &Api<ConfigMap>,
    watcher_config: watcher::Config,
) {
    for name in ["a", "b", "gone"] {
        cms.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    let (store, mut events) = spawn_reflector(cms.clone(), watcher_config);
    wait_for(&mut events, "init-done").await;
    assert_eq!(store_names(&store).await, vec!["a", "b", "gone"]);

    // No await between these: the watcher cannot reconnect until the history is gone.
    let cm_def = sim
        .cluster()
        .registry()
        .find("", "v1", "configmaps")
        .cloned()
        .unwrap();
    sim.end_watches();
    let body = serde_json::to_value(config_map("c", json!({}))).unwrap();
    sim.cluster()
        .create(&cm_def, Some("default"), body, &Default::default())
        .unwrap();
    sim.cluster()
        .delete(
            &cm_def,
            Some("default"),
            "gone",
            &serde_json::Value::Null,
            false,
        )
        .unwrap();
    sim.cluster().compact();

    // The resumed watch gets 410 Expired, so the watcher re-lists (a second Init).
    wait_for(&mut events, "init").await;
    wait_for(&mut events, "init-done").await;
    assert_eq!(store_names(&store).await, vec!["a", "b", "c"]);

    cms.create(&PostParams::default(), &config_map("d", json!({})))
        .await
        .unwrap();
    wait_for(&mut events, "apply").await;
    assert_eq!(store_names(&store).await, vec!["a", "b", "c", "d"]);
}

#[tokio::test]
async fn reflector_recovers_from_server_side_expiry_with_list_watch() {
    let sim = SimServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().unwrap());
    expire_while_disconnected(&sim, &cms, watcher::Config::default().page_size(2)).await;
    sim.stop().await;
}

#[tokio::test]
async fn reflector_recovers_from_server_side_expiry_with_streaming_lists() {
    let sim = SimServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().unwrap());
    expire_while_disconnected(&sim, &cms, watcher::Config::default().streaming_lists()).await;
    sim.stop().await;
}

#[tokio::test]
async fn metadata_watcher_sees_changes() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let metas: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::default_namespaced(client);
    let mut stream = watcher(metas, watcher::Config::default())
        .applied_objects()
        .boxed();
    cms.create(&PostParams::default(), &config_map("m", json!({"x": "1"})))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.name_any(), "m");
    assert_eq!(seen.labels()["x"], "1");
    sim.stop().await;
}

#[tokio::test]
async fn watchers_survive_an_api_server_restart() {
    let sim = SimServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().unwrap());
    cms.create(&PostParams::default(), &config_map("before", json!({})))
        .await
        .unwrap();
    let (store, mut events) = spawn_reflector(cms.clone(), watcher::Config::default());
    wait_for(&mut events, "init-done").await;

    sim.pause().await;
    assert!(cms.get("before").await.is_err(), "the server is down");
    sim.resume().await.unwrap();
    assert_eq!(
        cms.get("before").await.unwrap().name_any(),
        "before",
        "objects survive"
    );

    cms.create(&PostParams::default(), &config_map("after", json!({})))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while store_names(&store).await != vec!["after", "before"] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the reflector caught up after the restart");
    sim.stop().await;
}
