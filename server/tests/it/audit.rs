//! The audit ledger: tamper detection on both backends, the CLI check, and the HTTP listing,
//! export and verification.

use serde_json::{json, Value};
use server::store::{Actor, Store};

use crate::helpers::{catalog, TestDb, TestServer};

async fn raw(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap()
}

async fn ten_events(store: &Store) {
    let who = Actor {
        id: "local:ada".into(),
        name: "Ada".into(),
        method: "local".into(),
        source_ip: "10.0.0.1".into(),
    };
    for i in 0..10 {
        store
            .audit(&who.event(
                "sync",
                &format!("application:app-{}", i % 3),
                "started",
                json!({"i": i}),
                1_000 + i,
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_at_the_first_bad_row_on_both_backends() {
    let cases: [(&str, &[&str], i64); 5] = [
        ("an edited row", &["UPDATE audit_log SET actor_name = 'Mallory' WHERE seq = 4"], 4),
        ("a deleted row", &["DELETE FROM audit_log WHERE seq = 6"], 6),
        (
            "two rows swapped",
            &[
                "UPDATE audit_log SET seq = -3 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 5",
                "UPDATE audit_log SET seq = 5 WHERE seq = -3",
            ],
            3,
        ),
        ("a truncated tail", &["DELETE FROM audit_log WHERE seq > 8"], 9),
        (
            "an edited row given another row's hash",
            &["UPDATE audit_log SET outcome = 'failed', hash = (SELECT hash FROM audit_log WHERE seq = 2) WHERE seq = 4"],
            4,
        ),
    ];
    for (what, statements, first_bad) in cases {
        for db in TestDb::both().await {
            let store = db.store().await;
            ten_events(&store).await;
            let clean = store.audit_verify().await.unwrap();
            assert!(clean.ok && clean.verified_through == 10, "{clean:?}");
            let pool = raw(&db).await;
            for sql in statements {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            let v = store.audit_verify().await.unwrap();
            assert!(!v.ok, "{what} on {}", db.url);
            assert_eq!(v.first_bad, Some(first_bad), "{what} on {}: {v:?}", db.url);
            assert_eq!(v.verified_through, first_bad - 1, "{what}");
            pool.close().await;
            store.close().await;
            db.drop_db().await;
        }
    }
}

#[test]
fn tidemark_audit_verify_exits_1_naming_the_first_bad_row() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDb::sqlite();
    rt.block_on(async {
        let store = db.store().await;
        ten_events(&store).await;
        store.close().await;
    });
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["audit", "verify"])
            .env("TIDEMARK__DATABASE__URL", &db.url)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "Audit ledger verified through #10."
    );
    rt.block_on(async {
        let pool = raw(&db).await;
        sqlx::query("UPDATE audit_log SET details = '{\"i\":99}' WHERE seq = 7")
            .execute(&pool)
            .await
            .unwrap();
    });
    let bad = verify();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("audit ledger broken at #7: row #7 was altered"),
        "{err}"
    );
}

#[tokio::test]
async fn actions_are_listed_filtered_paged_and_exported_with_the_chain_status() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;
    let url = |p: &str| format!("{}/api/v1{p}", server.base);

    // An application created through the API is recorded with the change, by the token's name.
    let created = server
        .client
        .post(url("/applications"))
        .json(&json!({"name": "shop", "project": "retail", "repository": "examples", "path": "apps/shop",
                      "cluster": "sandbox", "namespace": "shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let denied = server.anonymous.get(url("/audit")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let viewer = crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
    let _ = viewer
        .post(url("/applications/guestbook/refresh"))
        .send()
        .await
        .unwrap(); // denied

    let page: Value = viewer
        .get(url("/audit?application=shop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["action"], "application_create");
    assert_eq!(items[0]["target"], "application:shop");
    assert_eq!(items[0]["details"]["project"], "retail");
    assert!(items[0]["actor_id"]
        .as_str()
        .unwrap()
        .starts_with("token:t-"));
    assert_eq!(items[0]["source_ip"], "127.0.0.1");

    let denials: Value = viewer
        .get(url("/audit?action=access_denied"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denials["items"][0]["target"], "application:guestbook");
    assert_eq!(denials["items"][0]["details"]["needs"], "deployer");

    // Keyset pages, newest first, until the end.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let page: Value = viewer
            .get(url(&format!("/audit?limit=1{q}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seqs.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    // 1: the test server's admin token, 2: the application, 3: the viewer token, 4: the denial.
    assert_eq!(seqs, vec![4, 3, 2, 1]);

    let jsonl = viewer.get(url("/audit?format=jsonl")).send().await.unwrap();
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let text = jsonl.text().await.unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).unwrap()["hash"]
            .as_str()
            .unwrap()
            .len()
            == 64));
    let csv = viewer
        .get(url("/audit?format=csv&limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["x-next-cursor"], "4");
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("seq,at,actor_id,"), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("\"4\",\""),
        "{text}"
    );

    let far: Value = viewer
        .get(url("/audit?since=2100-01-01T00:00:00Z"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(far["items"].as_array().unwrap().len(), 0);
    for bad in [
        "/audit?since=yesterday",
        "/audit?format=xml",
        "/audit?cursor=abc",
    ] {
        assert_eq!(
            viewer.get(url(bad)).send().await.unwrap().status(),
            400,
            "{bad}"
        );
    }

    let v: Value = viewer
        .get(url("/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"ok": true, "verified_through": 4, "first_bad": null, "problem": null})
    );
}

/// Verifying walks every project's rows: a project-scoped caller is refused, and a check is
/// reused for 30 seconds by the REST route and the Audit page alike.
#[tokio::test]
async fn ledger_verification_is_for_callers_who_see_everything_and_is_reused() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;
    let url = format!("{}/api/v1/audit/verify", server.base);
    let scoped =
        crate::helpers::bearer_client(&server.token(app::model::Role::Admin, Some("demo")).await);
    let refused = scoped.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("every project") && !text.contains("verified_through"),
        "{text}"
    );

    let first: Value = server
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["ok"], true);
    let through = first["verified_through"].as_i64().unwrap();
    let event = Actor::system().event(
        "note",
        "tidemark",
        "success",
        json!({}),
        server::clock::now(),
    );
    server.store.audit(&event).await.unwrap();
    let again: Value = server
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["verified_through"], through,
        "reused, not walked again"
    );
    let page = server
        .client
        .get(format!("{}/audit", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("verified through #{through}<")),
        "the page shares the check: {page}"
    );
}
