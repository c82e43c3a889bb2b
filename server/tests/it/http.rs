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

/// What the browser downloads: hashed files under `/pkg` from their precompressed siblings by
/// `Accept-Encoding`, cached as immutable; pages `no-cache` and compressed; live streams not.
#[tokio::test]
async fn static_files_are_sent_precompressed_and_cached_pages_compressed() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let wasm =
        b"\0asm fake module body that is long enough to compress well .................".repeat(20);
    std::fs::write(pkg.join("tidemark.H4sh.wasm"), &wasm).unwrap();
    std::fs::write(pkg.join("tidemark.H4sh.wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(pkg.join("tidemark.H4sh.wasm.gz"), b"gzip bytes").unwrap();
    std::fs::write(pkg.join("tidemark.J5sh.js"), "export default 1;").unwrap();
    std::fs::write(
        site.path().join("hash.txt"),
        "js: J5sh\nwasm: H4sh\ncss: C6sh\n",
    )
    .unwrap();
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    settings.server.site_root = site.path().to_path_buf();
    let server = TestServer::start(settings).await;
    let raw = reqwest::Client::builder()
        .no_brotli()
        .no_gzip()
        .build()
        .unwrap();
    let url = |p: &str| format!("{}{p}", server.base);

    let br = raw
        .get(url("/pkg/tidemark.H4sh.wasm"))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(br.status(), 200);
    assert_eq!(br.headers()["content-encoding"], "br");
    assert_eq!(
        br.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        br.bytes().await.unwrap().as_ref(),
        b"brotli bytes",
        "the stored .br is sent"
    );
    let gz = raw
        .get(url("/pkg/tidemark.H4sh.wasm"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(gz.bytes().await.unwrap().as_ref(), b"gzip bytes");
    let plain = raw
        .get(url("/pkg/tidemark.H4sh.wasm"))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.bytes().await.unwrap().len(), wasm.len());

    // The page names the hashed files, is revalidated on every load, and is compressed.
    let page = server.get("/applications").await;
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains("/pkg/tidemark.J5sh.js"), "{html}");
    assert!(html.contains("/pkg/tidemark.H4sh.wasm"), "{html}");
    assert!(html.contains("/pkg/tidemark.C6sh.css"), "{html}");
    let token = server.token(app::model::Role::Admin, None).await;
    let encoded = raw
        .get(url("/applications"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.headers()["content-encoding"], "br");
    let json = raw
        .get(url("/api/v1/applications"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(json.headers()["content-encoding"], "gzip");
    // A live update stream is never buffered by a compressor.
    let events = raw
        .get(url("/api/v1/applications/guestbook/events"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(events.headers().get("content-encoding").is_none());
}
