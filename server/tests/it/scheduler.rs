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
    // A listener that closes every connection at once: every compare fails fast with a
    // connection error (a closed port may instead be filtered and time out on some machines).
    let refuser = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    settings.clusters[0].url = format!("http://{}", refuser.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((conn, _)) = refuser.accept().await {
            drop(conn);
        }
    });
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
                if started.elapsed() > Duration::from_secs(120) {
                    let status = store.app_status("guestbook").await.unwrap();
                    let git = store.app_git_state("guestbook").await.unwrap();
                    panic!(
                        "no attempt {attempt} within 120 s; status {:?}; target {:?}, error {:?}",
                        status.map(|s| s.health_message),
                        git.target_sha,
                        git.last_error
                    );
                }
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
