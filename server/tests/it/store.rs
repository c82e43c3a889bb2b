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
async fn the_applications_list_filters_and_pages_by_keyset_on_the_server() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        let template = settings.applications[0].clone();
        settings.applications = (0..120)
            .map(|i| {
                let mut a = template.clone();
                a.name = format!("app-{i:03}");
                a.project = if i % 3 == 0 { "shop" } else { "web" }.into();
                a.namespace = format!("team_{}", i % 2);
                a
            })
            .collect();
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let status = server::store::AppStatus {
            sync_status: "OutOfSync".into(),
            health: "Degraded".into(),
            health_message: String::new(),
            target_sha: None,
            deployed_sha: None,
            resources: serde_json::json!([]),
            compared_at: 0,
        };
        store.save_status("app-007", &status).await.unwrap();

        // Every application exactly once over the pages, in name order.
        let mut seen = Vec::new();
        let mut q = app::model::AppListQuery::default();
        loop {
            let page = store.application_page(&q, 50, None).await.unwrap();
            assert_eq!(page.total, 120, "on {}", db.url);
            seen.extend(page.items.iter().map(|a| a.name.clone()));
            match page.next {
                Some(after) => q.after = after,
                None => break,
            }
        }
        let expected: Vec<String> = (0..120).map(|i| format!("app-{i:03}")).collect();
        assert_eq!(seen, expected, "on {}", db.url);

        let page = |q: app::model::AppListQuery, only: Option<Vec<String>>| {
            let store = store.clone();
            async move {
                store
                    .application_page(&q, 50, only.as_deref())
                    .await
                    .unwrap()
            }
        };
        let shop = page(
            app::model::AppListQuery {
                project: "shop".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!((shop.total, shop.items.len()), (40, 40), "on {}", db.url);
        let broken = page(
            app::model::AppListQuery {
                health: "Degraded".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!(
            broken
                .items
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["app-007"]
        );
        let unknown = page(
            app::model::AppListQuery {
                status: "Unknown".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!(
            unknown.total, 119,
            "never compared counts as Unknown on {}",
            db.url
        );
        // Words must all match; `_` and `%` are literal, not wildcards.
        let words = page(
            app::model::AppListQuery {
                q: "APP-01 team_1".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!(words.total, 5, "on {}", db.url);
        let literal = page(
            app::model::AppListQuery {
                q: "team%".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        assert_eq!(literal.total, 0, "on {}", db.url);
        // Someone limited to one project sees only it, and only it in the project filter.
        let scoped = page(
            app::model::AppListQuery::default(),
            Some(vec!["shop".into()]),
        )
        .await;
        assert_eq!(
            (scoped.total, scoped.projects.clone()),
            (40, vec!["shop".to_owned()])
        );
        let nothing = page(app::model::AppListQuery::default(), Some(Vec::new())).await;
        assert_eq!(nothing.total, 0);
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

#[tokio::test]
async fn a_sync_is_written_ahead_and_closed_exactly_once() {
    use server::store::{NewSync, SyncStatus};
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let new = NewSync {
            application: "guestbook",
            revision: "abc",
            digest: "d1",
            cause: "manual",
            actor: &server::store::Actor {
                id: "local:ada".into(),
                name: "Ada".into(),
                method: "local".into(),
                source_ip: "127.0.0.1".into(),
            },
            signature: None,
        };
        let first = store.begin_sync(new.clone(), 2_000).await.unwrap();
        let results = serde_json::json!([{"object": "Deployment shop/web", "action": "applied"}]);
        assert!(store
            .finish_sync(first, SyncStatus::Succeeded, &results, None, 3_000)
            .await
            .unwrap());
        assert!(
            !store
                .finish_sync(first, SyncStatus::Failed, &results, Some("late"), 4_000)
                .await
                .unwrap(),
            "on {}",
            db.url
        );

        // At most one sync of an application runs at a time, whichever replica asks.
        let second = store.begin_sync(new.clone(), 5_000).await.unwrap();
        let other = db.store().await; // another replica on the same database
        assert_ne!(other.replica_id(), store.replica_id());
        match other.begin_sync(new.clone(), 5_500).await {
            Err(server::store::StoreError::SyncRunning { application, sync }) => {
                assert_eq!((application.as_str(), sync), ("guestbook", Some(second)))
            }
            res => panic!("a second running sync on {}: {res:?}", db.url),
        }
        // A live replica's running sync is never interrupted by another replica...
        store.heartbeat(20_000).await.unwrap();
        assert!(other
            .interrupt_orphaned_syncs(30_000 - 15_000, 30_000)
            .await
            .unwrap()
            .is_empty());
        // ...nor by itself; once its heartbeat stops for 15 s it is closed, once.
        assert!(store
            .interrupt_orphaned_syncs(90_000, 90_000)
            .await
            .unwrap()
            .is_empty());
        let gone = other
            .interrupt_orphaned_syncs(36_000 - 15_000, 36_000)
            .await
            .unwrap();
        assert_eq!(gone.len(), 1, "on {}", db.url);
        assert_eq!(
            (gone[0].sync, gone[0].application.as_str()),
            (second, "guestbook")
        );
        assert_eq!(gone[0].owner.as_deref(), Some(store.replica_id()));
        assert!(other
            .interrupt_orphaned_syncs(37_000 - 15_000, 37_000)
            .await
            .unwrap()
            .is_empty());
        assert!(!store
            .finish_sync(second, SyncStatus::Succeeded, &results, None, 38_000)
            .await
            .unwrap());
        other.close().await;

        let syncs = store.syncs("guestbook", 10).await.unwrap();
        let states: Vec<_> = syncs
            .iter()
            .map(|s| (s.id, s.status, s.finished_at))
            .collect();
        assert_eq!(
            states,
            [
                (second, SyncStatus::Interrupted, Some(36_000)),
                (first, SyncStatus::Succeeded, Some(3_000))
            ],
            "on {}",
            db.url
        );
        assert_eq!(syncs[1].results, results);
        // Each sync's outcome is a ledger row of its own, linked to the row of its start, with
        // the same actor, counts per result and the first error.
        let filter = server::store::AuditFilter {
            action: Some("sync".into()),
            ..Default::default()
        };
        let (mut rows, _) = store.audit_page(&filter, None, 10).await.unwrap();
        rows.reverse();
        let seen: Vec<(i64, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.event.details["sync"].as_i64().unwrap(),
                    r.event.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (first, "started"),
                (first, "succeeded"),
                (second, "started"),
                (second, "interrupted")
            ],
            "on {}",
            db.url
        );
        assert_eq!(rows[1].event.details["started_seq"], rows[0].seq);
        assert_eq!(rows[1].event.actor_id, "local:ada");
        assert_eq!(
            rows[1].event.details["counts"],
            serde_json::json!({"applied": 1})
        );
        assert_eq!(rows[3].event.details["started_seq"], rows[2].seq);
        assert!(rows[3].event.details["first_error"]
            .as_str()
            .unwrap()
            .contains("stopped"));
        assert!(
            store.audit_verify().await.unwrap().ok,
            "the chain still verifies"
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn the_inventory_records_applied_objects_until_they_are_pruned() {
    use server::store::InventoryItem;
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let item = |kind: &str, name: &str| InventoryItem {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
        };
        store
            .add_to_inventory(
                "guestbook",
                &[item("ConfigMap", "a"), item("Service", "web")],
                1,
            )
            .await
            .unwrap();
        store
            .add_to_inventory("guestbook", &[item("ConfigMap", "a")], 2)
            .await
            .unwrap();
        store
            .remove_from_inventory("guestbook", &[item("Service", "web")])
            .await
            .unwrap();
        assert_eq!(
            store.inventory("guestbook").await.unwrap(),
            [item("ConfigMap", "a")],
            "on {}",
            db.url
        );
        assert!(store.inventory("podinfo").await.unwrap().is_empty());
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn at_most_one_drift_episode_is_open_per_application() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let changes = serde_json::json!([{"object": "Deployment web"}]);
        let first = store
            .open_drift_episode("guestbook", &changes, 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .open_drift_episode("guestbook", &changes, 2)
                .await
                .unwrap(),
            None,
            "on {}",
            db.url
        );
        assert!(store
            .open_drift_episode("podinfo", &changes, 2)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .close_drift_episode(first, "reverted", 3)
            .await
            .unwrap());
        assert!(!store.close_drift_episode(first, "synced", 4).await.unwrap());
        let second = store
            .open_drift_episode("guestbook", &changes, 5)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(second, first);
        assert_eq!(
            store.open_drift("guestbook").await.unwrap().unwrap().id,
            second
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn the_timeline_pages_newest_first_by_time_then_id_and_filters_kinds() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let none = serde_json::json!({});
        // Inserted out of time order; two events share a timestamp.
        for (kind, message, at) in [
            ("sync", "s1", 10),
            ("drift_opened", "d1", 30),
            ("sync", "s2", 20),
            ("sync", "s3", 30),
        ] {
            store
                .add_timeline("guestbook", kind, message, &none, at)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = store
                .timeline_page("guestbook", cursor.as_deref(), 2, &[])
                .await
                .unwrap();
            seen.extend(page.into_iter().map(|e| e.message));
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["s3", "d1", "s2", "s1"], "on {}", db.url);
        let (syncs, _) = store
            .timeline_page("guestbook", None, 10, &["sync".to_string()])
            .await
            .unwrap();
        assert_eq!(
            syncs.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["s3", "s2", "s1"]
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn sessions_tokens_and_sign_in_failures_behave_alike_on_both_backends() {
    for db in TestDb::both().await {
        let store = db.store().await;
        let on = &db.url;
        assert!(
            store.session_create("s1", "{}", 2_000).await.unwrap(),
            "{on}"
        );
        assert!(
            !store
                .session_create("s1", "{\"x\":1}", 2_000)
                .await
                .unwrap(),
            "ids are never overwritten on create"
        );
        store.session_save("s1", "{\"a\":1}", 3_000).await.unwrap();
        assert_eq!(
            store.session_load("s1", 1_000).await.unwrap(),
            Some(("{\"a\":1}".into(), 3_000))
        );
        assert_eq!(
            store.session_load("s1", 3_000).await.unwrap(),
            None,
            "expired on {on}"
        );
        store.purge_identity(3_000, 0).await.unwrap();
        assert!(
            store.session_create("s1", "{}", 9_000).await.unwrap(),
            "purged, so the id is free"
        );
        store.session_delete("s1").await.unwrap();
        assert_eq!(store.session_load("s1", 0).await.unwrap(), None);

        assert!(store
            .token_create("ci", "h1", "deployer", Some("web"), None, 10)
            .await
            .unwrap());
        assert!(
            !store
                .token_create("ci", "h2", "admin", None, None, 11)
                .await
                .unwrap(),
            "one live token per name"
        );
        let t = store.token_use("h1", 100_000).await.unwrap().unwrap();
        assert_eq!(
            (t.name.as_str(), t.role.as_str(), t.project.as_deref()),
            ("ci", "deployer", Some("web"))
        );
        assert_eq!(store.tokens().await.unwrap()[0].last_used_at, Some(100_000));
        assert!(store.token_revoke("ci", None, 200_000).await.unwrap());
        assert!(!store.token_revoke("ci", None, 200_001).await.unwrap());
        assert_eq!(store.token_use("h1", 300_000).await.unwrap(), None);
        assert!(
            store
                .token_create("ci", "h3", "viewer", None, None, 400_000)
                .await
                .unwrap(),
            "the name is free again"
        );

        store
            .add_login_failure(&["user:a", "ip:1"], 1_000)
            .await
            .unwrap();
        store.add_login_failure(&["user:a"], 2_000).await.unwrap();
        assert_eq!(
            store.login_failures("user:a", 0).await.unwrap(),
            (2, Some(1_000))
        );
        assert_eq!(
            store.login_failures("user:a", 1_500).await.unwrap(),
            (1, Some(2_000))
        );
        store.clear_login_failures("user:a").await.unwrap();
        assert_eq!(store.login_failures("user:a", 0).await.unwrap(), (0, None));
        assert_eq!(store.login_failures("ip:1", 0).await.unwrap().0, 1);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn concurrent_audit_appends_form_one_gapless_hash_chain() {
    use server::store::{audit_hash, AuditEvent, AUDIT_GENESIS};
    for db in TestDb::both().await {
        let store = db.store().await;
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .audit(&AuditEvent {
                            at: 1_000 + i,
                            actor_id: format!("local:u{i}"),
                            actor_name: format!("User {i}"),
                            auth_method: "local".into(),
                            action: "sign_in".into(),
                            target: "tidemark".into(),
                            details: serde_json::json!({"i": i, "z": [1, 2], "a": "x"}),
                            source_ip: "127.0.0.1".into(),
                            outcome: "success".into(),
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rows = store.audit_rows(0, 100).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=24).collect::<Vec<_>>(),
            "{}",
            db.url
        );
        let mut prev = AUDIT_GENESIS.to_owned();
        for r in &rows {
            assert_eq!(r.prev_hash, prev, "seq {} on {}", r.seq, db.url);
            assert_eq!(
                r.hash,
                audit_hash(&prev, r.seq, &r.event),
                "seq {} recomputes",
                r.seq
            );
            prev = r.hash.clone();
        }
        assert_eq!(store.audit_rows(20, 100).await.unwrap().len(), 4);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn what_other_applications_declare_and_hold_is_read_alike_on_both_backends() {
    use server::store::{Actor, InventoryItem, Pin};
    for db in TestDb::both().await {
        let store = db.store().await;
        let mut settings = db.settings();
        catalog(&mut settings);
        store
            .sync_declared(declared(&settings), 1_000)
            .await
            .unwrap();
        let cm = r#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}]"#;
        let svc = r#"[{"apiVersion":"v1","kind":"Service","metadata":{"name":"b"}}]"#;
        store
            .save_render("guestbook", "g1", "d-cm", cm, 1, 2_000)
            .await
            .unwrap();
        store
            .save_render("podinfo", "p1", "d-svc", svc, 1, 2_000)
            .await
            .unwrap();
        let targets = store.cluster_targets("sandbox").await.unwrap();
        assert_eq!(
            targets,
            [
                ("guestbook".into(), "guestbook".into(), cm.into()),
                ("podinfo".into(), "podinfo".into(), svc.into())
            ],
            "on {}",
            db.url
        );
        // A pinned application declares its pin, not its rendered target.
        let pin = Pin {
            revision: "g1".into(),
            digest: "d-cm".into(),
            pinned_by: "local:ada".into(),
            pinned_name: "Ada".into(),
            pinned_at: 3_000,
            reason: "test".into(),
        };
        let audit = Actor::system().event(
            "rollback",
            "application:podinfo",
            "success",
            serde_json::json!({}),
            3_000,
        );
        store.pin("podinfo", &pin, &audit).await.unwrap();
        let targets = store.cluster_targets("sandbox").await.unwrap();
        assert_eq!(targets[1], ("podinfo".into(), "podinfo".into(), cm.into()));
        assert!(store.cluster_targets("elsewhere").await.unwrap().is_empty());

        let item = |api_version: &str, kind: &str| InventoryItem {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: "a".into(),
        };
        store
            .add_to_inventory("guestbook", &[item("v1", "ConfigMap")], 4_000)
            .await
            .unwrap();
        store
            .add_to_inventory(
                "podinfo",
                &[item("v1", "ConfigMap"), item("apps/v1", "Deployment")],
                4_000,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .inventory_holders("", "ConfigMap", "shop", "a")
                .await
                .unwrap(),
            ["guestbook", "podinfo"]
        );
        assert_eq!(
            store
                .inventory_holders("apps", "Deployment", "shop", "a")
                .await
                .unwrap(),
            ["podinfo"]
        );
        assert!(store
            .inventory_holders("extensions", "Deployment", "shop", "a")
            .await
            .unwrap()
            .is_empty());
        store.close().await;
        db.drop_db().await;
    }
}
