//! Drift: episodes that open and close (reverted in the cluster, closed by a sync), self-heal,
//! and ignore rules.

use server::reconcile;
use server::store::{DeclaredCatalog, SyncStatus};

use super::{fixture, fixture_any, live_replicas, scale_by_hand, sync_target};

#[tokio::test]
async fn drift_opens_an_episode_that_closes_when_reverted_in_the_cluster_or_by_a_sync() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    sync_target(&f, "guestbook").await;
    assert!(
        !reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );

    scale_by_hand(&f, 5).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert!(
        o.drifting && o.synced.is_none(),
        "manual policy never syncs by itself: {o:?}"
    );
    assert_eq!(o.sync_status, "OutOfSync");
    // Still drifting: no second episode.
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    scale_by_hand(&f, 2).await;
    assert!(
        !reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );

    scale_by_hand(&f, 7).await;
    assert!(
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );
    sync_target(&f, "guestbook").await;
    assert!(f.store.open_drift("guestbook").await.unwrap().is_none());

    let timeline = f.store.timeline("guestbook", 30).await.unwrap();
    let drift: Vec<&str> = timeline
        .iter()
        .rev()
        .filter(|(k, _)| k.starts_with("drift"))
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(drift.len(), 4, "{drift:?}");
    assert!(
        drift[0].starts_with("drift detected: 1 differ") && drift[0].contains("Deployment web"),
        "{drift:?}"
    );
    assert!(drift[1].contains("reverted in cluster"), "{drift:?}");
    assert!(drift[3].contains("closed by a sync"), "{drift:?}");
}

#[tokio::test]
async fn self_heal_reapplies_git_and_closes_the_episode() {
    let f = fixture_any(app::model::SyncPolicy::Auto, true).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    scale_by_hand(&f, 9).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(o.synced.map(|s| s.1), Some(SyncStatus::Succeeded));
    assert!(!o.drifting);
    assert_eq!(o.sync_status, "Synced");
    assert_eq!(live_replicas(&f).await, 2);
    let syncs = f.store.syncs("guestbook", 1).await.unwrap();
    assert_eq!(syncs[0].cause, "self_heal");
    let timeline = f.store.timeline("guestbook", 10).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(k, m)| k == "drift_closed" && m.contains("self-healed")),
        "{timeline:?}"
    );
}

#[tokio::test]
async fn ignore_rules_keep_hand_scaled_replicas_out_of_drift() {
    let mut f = fixture().await;
    f.settings.applications[0].ignore = vec![server::diff::IgnoreRule {
        kind: Some("Deployment".into()),
        json_pointers: vec!["/spec/replicas".into()],
        ..Default::default()
    }];
    let s = &f.settings;
    let catalog = DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    };
    f.store.sync_declared(catalog, 1).await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    assert_eq!(app.ignore.len(), 1);
    sync_target(&f, "guestbook").await;
    scale_by_hand(&f, 6).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!((o.sync_status, o.drifting), ("Synced", false));
}
