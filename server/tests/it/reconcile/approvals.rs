//! Sync requests and their decisions: N-of-M approvals, four-eyes, a new target superseding a
//! request (and voiding its approvals), rejection, "sync now". Every test runs on SQLite and on
//! PostgreSQL (the decisions are transactions on the store).

use serde_json::json;
use server::config::ApprovalPolicy;
use server::reconcile;

use super::{
    approvers, decide, fixture_approvals_on, gated, needs_approvals, pending_requests, refresh,
    wait_pending, APP,
};
use crate::helpers::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_m_approvals_with_four_eyes_run_the_sync_exactly_once() {
    for db in TestDb::both().await {
        let (f, app) = gated(db).await;
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let (server, people) = approvers(&f).await;

        let pending: serde_json::Value = server
            .client
            .get(format!(
                "{}/api/v1/sync-requests?status=pending",
                server.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = pending["items"].as_array().unwrap();
        assert_eq!(
            items.len(),
            1,
            "one request, however often it is compared: {pending}"
        );
        let id = items[0]["id"].as_i64().unwrap();
        assert_eq!(
            (items[0]["cause"].as_str(), items[0]["required"].as_i64()),
            (Some("revision"), Some(2))
        );

        // A direct sync is refused while approvals are required.
        let direct = server
            .client
            .post(format!(
                "{}/api/v1/applications/guestbook/sync",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 409);
        assert!(direct
            .text()
            .await
            .unwrap()
            .contains(&format!("approve sync request #{id}")));

        // Four-eyes: the commit's author may not approve it.
        let (status, body) = decide(&server, &people["ada"], id, "approve", None).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("you authored commit"),
            "{body}"
        );

        let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("pending")),
            "{body}"
        );
        let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
        assert_eq!(status, 409, "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("already approved"));

        // Two approvers at the same instant: one completes the request, the other finds it decided.
        let (a, b) = tokio::join!(
            decide(&server, &people["bob"], id, "approve", None),
            decide(&server, &people["dave"], id, "approve", None)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let done = if a.0 == 200 { a.1 } else { b.1 };
        assert_eq!(done["status"], "synced", "{done}");
        let syncs = f.store.syncs("guestbook", 10).await.unwrap();
        assert_eq!(
            syncs.iter().filter(|s| s.cause == "approved").count(),
            1,
            "{syncs:?}"
        );
        assert_eq!(done["sync_id"].as_i64(), Some(syncs[0].id));
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(f.kube.clone(), "guestbook");
        assert!(deployments.get_opt("web").await.unwrap().is_some());

        // In sync now: no new request; the ledger holds the approvals and the sync, chained.
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        assert!(pending_requests(&f).await.is_empty());
        let rows = f.store.audit_rows(0, 100).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.event.action.as_str()).collect();
        assert_eq!(
            actions.iter().filter(|a| **a == "approve").count(),
            2,
            "{actions:?}"
        );
        assert!(actions.contains(&"sync"));
        assert!(f.store.audit_verify().await.unwrap().ok);
        drop(server);
        f.close().await;
    }
}

#[tokio::test]
async fn a_new_commit_supersedes_the_request_and_voids_its_approvals_and_rejection_needs_a_reason()
{
    for db in TestDb::both().await {
        let (f, app) = gated(db).await;
        let (server, people) = approvers(&f).await;
        let first = pending_requests(&f).await[0].id;
        assert_eq!(
            decide(&server, &people["alice"], first, "approve", None)
                .await
                .0,
            200
        );

        f.repo.write(
            "apps/guestbook/app.yaml",
            &APP.replace("replicas: 2", "replicas: 4"),
        );
        let tip = f.repo.commit("scale to 4");
        // From here on the server's engine compares (it would race a compare of the test's
        // own): its Git poller fetches the new commit on a refresh.
        refresh(&server).await;
        let second = wait_pending(&f, |r| r.revision == tip).await.id;

        let old = f.store.sync_request(first).await.unwrap().unwrap();
        assert_eq!(old.status, "superseded");
        assert!(
            old.approvals.iter().all(|a| a.void) && old.approvals.len() == 1,
            "{old:?}"
        );
        assert_eq!(old.superseded_by, Some(second));
        let new = f.store.sync_request(second).await.unwrap().unwrap();
        assert_eq!((new.status.as_str(), new.approvals.len()), ("pending", 0));
        assert_ne!(new.revision, old.revision);
        let (status, _) = decide(&server, &people["bob"], first, "approve", None).await;
        assert_eq!(status, 409, "a superseded request cannot be approved");
        let timeline = f.store.timeline("guestbook", 50).await.unwrap();
        assert!(
            timeline
                .iter()
                .any(|(kind, message)| kind == "sync_request_superseded"
                    && message.contains("approvals are void")),
            "{timeline:?}"
        );

        // The same revision rendered differently also supersedes (bound to the digest).
        let change = f
            .store
            .ensure_sync_request(
                "guestbook",
                &new.revision,
                "another-digest",
                "revision",
                2,
                1,
            )
            .await
            .unwrap();
        let third = match change {
            server::store::RequestChange::Created { id, superseded } => {
                assert_eq!(superseded, Some(second));
                id
            }
            other => panic!("{other:?}"),
        };
        // The next compare supersedes that request in turn: the render is not "another-digest".
        // (The engine is idle now: no new commit, nothing of the application's in the cluster.)
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let third_closed = f.store.sync_request(third).await.unwrap().unwrap();
        assert_eq!(third_closed.status, "superseded", "{third_closed:?}");
        let pending = pending_requests(&f).await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        let fourth = pending[0].id;
        assert_eq!(
            (pending[0].revision.as_str(), pending[0].digest.as_str()),
            (new.revision.as_str(), new.digest.as_str())
        );

        // Rejection needs a reason; then the request is closed.
        let (status, body) = decide(
            &server,
            &people["bob"],
            fourth,
            "reject",
            Some(json!({"reason": "  "})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = decide(&server, &people["bob"], fourth, "reject", None).await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = decide(
            &server,
            &people["bob"],
            fourth,
            "reject",
            Some(json!({"reason": "wrong replicas"})),
        )
        .await;
        assert_eq!(
            (status, body["status"].as_str(), body["reason"].as_str()),
            (200, Some("rejected"), Some("wrong replicas"))
        );
        assert_eq!(
            decide(&server, &people["alice"], fourth, "approve", None)
                .await
                .0,
            409
        );
        let viewer =
            crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
        let denied = viewer
            .post(format!(
                "{}/api/v1/sync-requests/{fourth}/approve",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
        assert!(denied
            .text()
            .await
            .unwrap()
            .contains("Approving needs the deployer role in project demo"));
        drop(server);
        f.close().await;
    }
}

#[tokio::test]
async fn an_approved_request_can_wait_for_a_sync_now_click() {
    for db in TestDb::both().await {
        let policy = ApprovalPolicy {
            sync_on_approval: false,
            ..needs_approvals(1)
        };
        let f = fixture_approvals_on(db, app::model::SyncPolicy::Manual, false, policy).await;
        let app = f.store.app_source("guestbook").await.unwrap().unwrap();
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let (server, people) = approvers(&f).await;
        let id = pending_requests(&f).await[0].id;
        let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("approved")),
            "{body}"
        );
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        assert_eq!(
            f.store
                .sync_requests(None, None, None, 10)
                .await
                .unwrap()
                .len(),
            1,
            "no second request while it waits"
        );
        assert!(f.store.syncs("guestbook", 10).await.unwrap().is_empty());
        let (status, body) = decide(&server, &people["bob"], id, "sync", None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("synced")),
            "{body}"
        );
        let (status, _) = decide(&server, &people["bob"], id, "sync", None).await;
        assert_eq!(status, 409, "runs once");
        assert_eq!(f.store.syncs("guestbook", 10).await.unwrap().len(), 1);
        drop(server);
        f.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_checks_the_applications_own_change_when_the_tip_is_another_commit() {
    for db in TestDb::both().await {
        let f = fixture_approvals_on(
            db,
            app::model::SyncPolicy::Manual,
            false,
            needs_approvals(1),
        )
        .await;
        // guestbook's change is ada's (the fixture's commit); the tip is someone else's, elsewhere.
        f.repo.write("docs/README.md", "hello\n");
        f.repo.git(&["add", "-A"]);
        f.repo.git(&[
            "-c",
            "user.name=Zed",
            "-c",
            "user.email=zed@example.com",
            "commit",
            "-qm",
            "docs",
        ]);
        f.git.sync_repository("demo").await.unwrap();
        let app = f.store.app_source("guestbook").await.unwrap().unwrap();
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let (server, people) = approvers(&f).await;
        let req = pending_requests(&f).await[0].clone();
        assert_eq!(
            req.revision,
            f.repo.git(&["rev-parse", "HEAD"]),
            "the request is bound to the tip, an unrelated commit"
        );
        let (status, body) = decide(&server, &people["ada"], req.id, "approve", None).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("you authored commit"),
            "{body}"
        );
        let (status, body) = decide(&server, &people["bob"], req.id, "approve", None).await;
        assert_eq!(status, 200, "{body}");
        drop(server);
        f.close().await;
    }
}
