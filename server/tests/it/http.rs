//! The HTTP host, started exactly as `tidemark serve` starts it.

use crate::helpers::{catalog, TestDb, TestServer};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let db = TestDb::sqlite();
    let server = TestServer::start(db.settings()).await;

    let health = server.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(server.get("/readyz").await.status(), 200);

    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"tidemark_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/readyz""#), "{text}");
}

#[tokio::test]
async fn applications_page_is_rendered_on_the_server_with_declared_applications() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;

    let page = server.get("/applications").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "Tidemark",
        "Applications",
        "Approvals",
        "Audit",
        "guestbook",
        "podinfo",
        "/pkg/tidemark.js",
    ] {
        assert!(html.contains(needle), "missing {needle} in {html}");
    }
}

#[tokio::test]
async fn the_filter_works_without_javascript_through_the_query_string() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;

    let html = server
        .get("/applications?q=podi")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("1 application matches · showing 1"), "{html}");
    assert!(html.contains(r#"data-app="podinfo""#));
    assert!(!html.contains(r#"data-app="guestbook""#));
}

#[tokio::test]
async fn an_empty_catalog_explains_how_to_declare_an_application() {
    let db = TestDb::sqlite();
    let server = TestServer::start(db.settings()).await;
    let html = server.get("/").await.text().await.unwrap();
    assert!(html.contains("No applications yet"), "{html}");
    assert!(html.contains("[[applications]]"), "{html}");
}

#[tokio::test]
async fn the_server_function_returns_applications_as_json() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;

    let resp = server
        .client
        .post(format!("{}/_fn/application_page", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: app::model::AppListPage = resp.json().await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.total, 2);
}

#[tokio::test]
async fn unknown_pages_answer_404_with_the_app_shell() {
    let db = TestDb::sqlite();
    let server = TestServer::start(db.settings()).await;
    let resp = server.get("/no/such/page").await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("Page not found"));
}

#[tokio::test]
async fn the_audit_page_lists_the_ledger_with_its_chain_status_and_filters() {
    let db = TestDb::sqlite();
    let server = TestServer::start(db.settings()).await;
    let html = server.get("/audit").await.text().await.unwrap();
    assert!(html.contains("Hash chain verified through #1"), "{html}");
    assert!(
        html.contains("token_create") && html.contains(r#"data-seq="1""#),
        "{html}"
    );
    assert!(html.contains("/api/v1/audit?format=csv"), "{html}");
    let none = server
        .get("/audit?action=rollback")
        .await
        .text()
        .await
        .unwrap();
    assert!(none.contains("No matching entries"), "{none}");
    assert!(
        none.contains("format=jsonl&amp;limit=10000&amp;action=rollback")
            || none.contains("format=jsonl&limit=10000&action=rollback"),
        "{none}"
    );
}
