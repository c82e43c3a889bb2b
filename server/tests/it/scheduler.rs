//! The reconcile scheduler as people see it: a failing application backs off (5 s, then 10 s…)
//! and its page says so; the others are not held up.

use std::time::{Duration, Instant};

use server::config::RepositorySettings;

use crate::git::GitRepo;
use crate::helpers::{catalog, TestDb, TestServer, ADMIN_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_application_backs_off_and_its_page_says_when_it_retries() {
    let repo = GitRepo::new();
    repo.write(
        "apps/guestbook/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: \"1\"}\n",
    );
    repo.commit("guestbook");
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    settings.repositories = vec![RepositorySettings::new("examples", repo.url())];
    // Nothing listens on the discard port: every compare fails with a connection error.
    settings.clusters[0].url = "http://127.0.0.1:9".into();
    settings.applications.truncate(1);
    let server = TestServer::start(settings).await;

    let status = |attempt: u32| {
        let store = server.store.clone();
        async move {
            let started = Instant::now();
            loop {
                if let Some(s) = store.app_status("guestbook").await.unwrap() {
                    if s.health_message.contains(&format!("(attempt {attempt})")) {
                        return (s, started.elapsed());
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "no attempt {attempt} within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (first, _) = status(2).await;
    assert_eq!(first.sync_status, "Unknown");
    assert!(
        first
            .health_message
            .starts_with("retrying in 5 s (attempt 2): "),
        "{}",
        first.health_message
    );
    let (second, waited) = status(3).await;
    assert!(
        second
            .health_message
            .starts_with("retrying in 10 s (attempt 3): "),
        "{}",
        second.health_message
    );
    assert!(
        waited >= Duration::from_secs(3),
        "the second attempt waited its backoff (waited {waited:?})"
    );

    let admin = server.browser_signed_in("admin", ADMIN_PASSWORD).await;
    let page = admin
        .get(format!("{}/applications/guestbook", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-testid="compare-error""#), "{page}");
    assert!(page.contains("Compare failed: "), "{page}");
    assert!(page.contains("retrying in "), "{page}");
}
