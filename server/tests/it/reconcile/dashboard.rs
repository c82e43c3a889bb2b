//! The dashboard: pages rendered on the server, decisions through server functions (approve,
//! rollback, unpin) and the live event stream. Runs on SQLite and on PostgreSQL.

use server::reconcile;

use super::{approvers, gated, pending_requests};
use crate::helpers::TestDb;

/// Calls a server function the way a browser form does (URL-encoded body, same Origin).
async fn server_fn(
    server: &crate::helpers::TestServer,
    client: &reqwest::Client,
    name: &str,
    body: &str,
) -> (u16, String) {
    let resp = client
        .post(format!("{}/_fn/{name}", server.base))
        .header("origin", &server.base)
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn page(client: &reqwest::Client, server: &crate::helpers::TestServer, path: &str) -> String {
    let resp = client
        .get(format!("{}{path}", server.base))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_requests_timeline_diff_and_decides_through_server_functions() {
    for db in TestDb::both().await {
        let (f, app) = gated(db).await;
        let (server, people) = approvers(&f).await;
        let id = pending_requests(&f).await[0].id;
        let head = f
            .store
            .app_git_state("guestbook")
            .await
            .unwrap()
            .target_sha
            .unwrap();

        // The list: one row with its pending approvals; filters and keyset paging on the server.
        let list = page(&people["alice"], &server, "/applications").await;
        assert!(list.contains(r#"data-app="guestbook""#), "{list}");
        assert!(list.contains("0 of 2"), "pending approvals shown: {list}");
        let none = page(&people["alice"], &server, "/applications?health=Degraded").await;
        assert!(
            none.contains("No application matches these filters"),
            "{none}"
        );
        let after = page(&people["alice"], &server, "/applications?after=guestbook").await;
        assert!(!after.contains(r#"data-app="guestbook""#));

        // Someone whose role is limited to another project does not see this one in the list.
        let other = crate::helpers::bearer_client(
            &server.token(app::model::Role::Deployer, Some("shop")).await,
        );
        assert!(!page(&other, &server, "/applications")
            .await
            .contains(r#"data-app="guestbook""#));
        // The author sees why they cannot approve; another deployer gets the buttons.
        let ada = page(&people["ada"], &server, "/applications/guestbook").await;
        assert!(ada.contains("you authored commit"), "{ada}");
        assert!(!ada.contains(r#"data-testid="approve""#));
        let alice = page(&people["alice"], &server, "/applications/guestbook").await;
        assert!(alice.contains(&format!("Sync request #{id}")), "{alice}");
        assert!(alice.contains(r#"data-testid="approve""#));
        assert!(alice.contains(&head[..7]), "target revision in the header");
        assert!(
            alice.contains(r#"data-kind="commit""#),
            "commits on the timeline: {alice}"
        );
        assert!(alice.contains(r#"data-kind="sync_requested""#), "{alice}");

        // A viewer token may read but not decide: 403, recorded, nothing changed.
        let viewer =
            crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
        let (status, body) = server_fn(&server, &viewer, "approve", &format!("request={id}")).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body.contains("needs the deployer role in project demo"),
            "{body}"
        );
        let (status, body) =
            server_fn(&server, &people["ada"], "approve", &format!("request={id}")).await;
        assert_eq!(status, 403, "four-eyes holds through the UI too: {body}");

        let (status, body) = server_fn(
            &server,
            &people["alice"],
            "approve",
            &format!("request={id}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("1 of 2"), "{body}");
        let approvals = page(&people["bob"], &server, "/approvals").await;
        assert!(
            approvals.contains(&format!("Sync request #{id}")),
            "{approvals}"
        );
        assert!(approvals.contains("Approved by: alice"), "{approvals}");
        let (status, body) =
            server_fn(&server, &people["bob"], "approve", &format!("request={id}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("synced"), "{body}");
        let approvals = page(&people["bob"], &server, "/approvals").await;
        assert!(
            approvals.contains("Nothing is waiting for approval"),
            "{approvals}"
        );

        // Timeline: the approvals and the sync with its per-resource results; filters by kind.
        let timeline = page(
            &people["bob"],
            &server,
            "/applications/guestbook?tab=timeline",
        )
        .await;
        assert!(timeline.contains(r#"data-kind="approval""#), "{timeline}");
        assert!(timeline.contains(r#"data-kind="sync""#), "{timeline}");
        assert!(timeline.contains("resource results"), "{timeline}");
        let only_syncs = page(
            &people["bob"],
            &server,
            "/applications/guestbook?tab=timeline&kinds=syncs",
        )
        .await;
        assert!(only_syncs.contains(r#"data-kind="sync""#));
        assert!(
            !only_syncs.contains(r#"data-kind="commit""#),
            "{only_syncs}"
        );

        // Resources and the live diff after the sync.
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let resources = page(
            &people["bob"],
            &server,
            "/applications/guestbook?tab=resources",
        )
        .await;
        assert!(
            resources.contains(r#"data-resource="Deployment/guestbook/web""#),
            "{resources}"
        );
        let diff = page(&people["bob"], &server, "/applications/guestbook?tab=diff").await;
        assert!(diff.contains("The cluster matches Git"), "{diff}");

        // Rollback from the dialog's form: pinned banner, then unpin.
        let dialog = page(
            &people["bob"],
            &server,
            &format!("/applications/guestbook?dialog=rollback&revision={head}"),
        )
        .await;
        assert!(
            dialog.contains(r#"data-testid="rollback-dialog""#),
            "{dialog}"
        );
        assert!(dialog.contains("running now"), "{dialog}");
        let (status, body) = server_fn(
            &server,
            &people["bob"],
            "rollback",
            &format!("name=guestbook&revision={head}&reason="),
        )
        .await;
        assert_eq!(status, 400, "a rollback needs a reason: {body}");
        let (status, body) = server_fn(
            &server,
            &people["bob"],
            "rollback",
            &format!("name=guestbook&revision={head}&reason=bad+release"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("pinned"), "{body}");
        let pinned = page(&people["bob"], &server, "/applications/guestbook").await;
        assert!(
            pinned.contains(r#"data-testid="pinned-banner""#),
            "{pinned}"
        );
        assert!(pinned.contains("bad release"), "{pinned}");
        let (status, body) = server_fn(&server, &people["bob"], "unpin", "name=guestbook").await;
        assert_eq!(status, 200, "{body}");
        assert!(!page(&people["bob"], &server, "/applications/guestbook")
            .await
            .contains(r#"data-testid="pinned-banner""#));

        // Unknown application: a clear error, not a crash.
        let (status, body) =
            server_fn(&server, &people["bob"], "application_detail", "name=nope").await;
        assert_eq!(status, 404, "{body}");

        // Live updates: the event stream says it is ready, then reports a change.
        let within_5s = std::time::Duration::from_secs(5);
        let mut events = tokio::time::timeout(
            within_5s,
            people["bob"]
                .get(format!(
                    "{}/api/v1/applications/guestbook/events",
                    server.base
                ))
                .send(),
        )
        .await
        .expect("the event stream within 5 s")
        .unwrap();
        assert_eq!(events.status(), 200);
        let first = tokio::time::timeout(within_5s, events.chunk())
            .await
            .expect("the ready event within 5 s")
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: ready"));
        f.store
            .add_timeline("guestbook", "refresh", "poke", &serde_json::json!({}), 1)
            .await
            .unwrap();
        let next = tokio::time::timeout(within_5s, events.chunk())
            .await
            .expect("a change within 5 s")
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&next).contains("event: changed"),
            "{next:?}"
        );
        drop(events);
        drop(server);
        f.close().await;
    }
}
