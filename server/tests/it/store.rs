//! The store suite: every test runs unchanged on SQLite and on PostgreSQL.

use crate::helpers::{catalog, TestDb};
use server::store::{Backend, DeclaredCatalog};

#[tokio::test]
async fn migrations_apply_once_and_rerun_as_a_no_op() {
    for db in TestDb::both().await {
        let store = db.store().await;
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(
            store.backend(),
            if db.url.starts_with("sqlite") {
                Backend::Sqlite
            } else {
                Backend::Postgres
            }
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn declared_applications_are_listed_sorted_with_their_repository() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        settings.applications.reverse();
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();

        let apps = store.list_applications().await.unwrap();
        let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["guestbook", "podinfo"], "on {}", db.url);
        assert_eq!(apps[0].repo_url, "https://git.example/examples.git");
        assert_eq!(apps[0].path, "apps/guestbook");
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn an_application_removed_from_config_is_retired_and_returns_when_declared_again() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();

        let podinfo = settings.applications.pop().unwrap();
        settings.applications[0].namespace = "guestbook-prod".into();
        store
            .sync_declared(declared(&settings), 2_000)
            .await
            .unwrap();
        let apps = store.list_applications().await.unwrap();
        assert_eq!(apps.len(), 1, "on {}", db.url);
        assert_eq!(
            apps[0].namespace, "guestbook-prod",
            "edits are applied on {}",
            db.url
        );

        settings.applications.push(podinfo);
        store
            .sync_declared(declared(&settings), 3_000)
            .await
            .unwrap();
        assert_eq!(
            store.list_applications().await.unwrap().len(),
            2,
            "on {}",
            db.url
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn an_application_naming_an_unknown_repository_is_rejected_and_changes_nothing() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();

        // Bypasses config validation on purpose: the schema itself must refuse it.
        settings.applications[1].repository = "ghost".into();
        settings.applications[0].namespace = "changed".into();
        assert!(store
            .sync_declared(declared(&settings), 2_000)
            .await
            .is_err());
        let apps = store.list_applications().await.unwrap();
        assert_eq!(
            apps[0].namespace, "guestbook",
            "the transaction rolled back on {}",
            db.url
        );
        store.close().await;
        db.drop_db().await;
    }
}

fn declared(s: &server::config::Settings) -> DeclaredCatalog<'_> {
    DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    }
}
