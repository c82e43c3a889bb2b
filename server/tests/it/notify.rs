//! Notifications through real receivers: a local HTTP server (webhook, Slack) and aiosmtpd
//! (e-mail over STARTTLS with a login); retries, restarts, signatures; `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use server::notify::{Notifier, Trigger};
use server::store::{AuditEvent, DeclaredCatalog, Pin, Store};
use server::telemetry::Metrics;

use crate::helpers::{catalog, TestDb, TestServer};

/// One request the receiver got and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn key(&self) -> String {
        self.json()["idempotency_key"].as_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    log: Mutex<Vec<Received>>,
    /// Answer 500 to this many more requests on `fail_path`.
    fail_next: AtomicUsize,
    fail_path: Mutex<String>,
    /// Answer 500 to everything while set.
    down: AtomicBool,
}

/// A local HTTP server that records every POST; `fail_next`/`down` make it answer 500.
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState::default());
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let state = shared.clone();
                async move {
                    let fail = state.down.load(Ordering::SeqCst)
                        || *state.fail_path.lock().unwrap() == uri.path()
                            && state
                                .fail_next
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                    let status: u16 = if fail { 500 } else { 200 };
                    state.log.lock().unwrap().push(Received {
                        path: uri.path().to_owned(),
                        status,
                        headers,
                        body,
                    });
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        if fail {
                            "receiver is failing on purpose"
                        } else {
                            "ok"
                        },
                    )
                }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, state, task }
    }

    pub fn fail_next(&self, path: &str, n: usize) {
        *self.state.fail_path.lock().unwrap() = path.to_owned();
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// The requests answered 200 on `path`.
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path == path && r.status == 200)
            .collect()
    }

    /// Waits until `path` has at least `n` answered-200 requests.
    pub async fn wait_delivered(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let started = std::time::Instant::now();
        loop {
            let got = self.delivered(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < within,
                "only {} of {n} notifications reached {path} within {within:?}: {:#?}",
                got.len(),
                self.all()
                    .iter()
                    .map(|r| (&r.path, r.status, &r.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `X-Tidemark-Signature` as a receiver would: HMAC-SHA256 of the raw body.
fn signature_valid(r: &Received, secret: &str) -> bool {
    let Some(header) = r.headers.get("x-tidemark-signature") else {
        return false;
    };
    let Some(hex) = header.to_str().unwrap().strip_prefix("sha256=") else {
        return false;
    };
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(r.body.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

fn notification_settings(toml_text: &str) -> server::config::NotificationSettings {
    toml::from_str(toml_text).unwrap()
}

fn audit(action: &str) -> AuditEvent {
    AuditEvent {
        at: 1,
        actor_id: "local:ada".into(),
        actor_name: "Ada".into(),
        auth_method: "local".into(),
        action: action.into(),
        target: "guestbook".into(),
        details: json!({}),
        source_ip: "127.0.0.1".into(),
        outcome: "success".into(),
    }
}

const MINUTE: i64 = 60_000;

/// A migrated store holding the helpers' catalog (guestbook and podinfo in project demo).
async fn catalog_store(db: &TestDb) -> Store {
    let store = db.store().await;
    let mut settings = db.settings();
    catalog(&mut settings);
    store
        .sync_declared(
            DeclaredCatalog {
                repositories: &settings.repositories,
                clusters: &settings.clusters,
                applications: &settings.applications,
            },
            0,
        )
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trigger_notifies_once_retries_after_500_and_is_signed_on_both_backends() {
    for db in TestDb::both().await {
        let store = catalog_store(&db).await;
        let receiver = Receiver::start().await;
        let all: Vec<&str> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
        let notifications = notification_settings(&format!(
            r#"
            drift_stale_after = "5m"
            pinned_after = "1h"
            retry_initial = "1s"
            [[targets]]
            name = "hook"
            type = "webhook"
            url = "{base}/hook"
            secret_env = "HOOK_SECRET"
            [[targets]]
            name = "chat"
            type = "slack"
            url_env = "CHAT_URL"
            [[targets]]
            name = "elsewhere"
            type = "webhook"
            url = "{base}/elsewhere"
            [[subscriptions]]
            target = "hook"
            triggers = {all:?}
            [[subscriptions]]
            target = "chat"
            applications = ["guestbook"]
            triggers = ["sync_failed"]
            [[subscriptions]]
            target = "elsewhere"
            projects = ["another-project"]
            "#,
            base = receiver.base
        ));
        let chat_url = format!("{}/chat", receiver.base);
        let env = |var: &str| match var {
            "HOOK_SECRET" => Some("s3cret".to_owned()),
            "CHAT_URL" => Some(chat_url.clone()),
            _ => None,
        };
        let notifier = Notifier::build(
            store.clone(),
            &notifications,
            "https://tidemark.example/",
            Arc::new(Metrics::new()),
            &env,
        )
        .unwrap();

        // One timeline event per trigger (as the reconciler and the workflow write them), and
        // some that notify nobody.
        let now = server::clock::now();
        let drifted = json!({"episode": 1, "resources": [{"object": {"kind": "Secret", "namespace": "guestbook", "name": "db"},
            "status": "Modified", "changes": [{"path": "data.password", "desired": "hunter2", "live": "stolen"}]}]});
        let events: Vec<(&str, &str, Value, Option<&str>)> = vec![
            (
                "drift_opened",
                "drift detected: 1 differ from the last sync (Secret db)",
                drifted,
                Some("drift_opened"),
            ),
            (
                "sync",
                "sync of abc failed: 1 of 3 resources failed",
                json!({"sync": 7, "status": "failed"}),
                Some("sync_failed"),
            ),
            (
                "sync",
                "sync of abc succeeded (3 resources)",
                json!({"sync": 8, "status": "succeeded"}),
                Some("sync_succeeded"),
            ),
            (
                "health",
                "health changed: Healthy → Degraded",
                json!({"health": "Degraded"}),
                Some("health_degraded"),
            ),
            (
                "health",
                "health changed: Degraded → Healthy",
                json!({"health": "Healthy"}),
                None,
            ),
            (
                "sync_requested",
                "sync request #3 waits for 2 approval(s)",
                json!({"request": 3, "revision": "abc", "required": 2, "approvers": ["platform", "security"]}),
                Some("approval_requested"),
            ),
            (
                "rollback_requested",
                "Ada asked to roll back",
                json!({"request": 4, "revision": "abc", "by": "local:ada", "reason": "x"}),
                Some("approval_requested"),
            ),
            (
                "sync_request_superseded",
                "sync request #3 superseded by #5",
                json!({"request": 3, "superseded_by": 5, "voided_approvals": 1}),
                Some("approval_voided"),
            ),
            (
                "sync_request_superseded",
                "sync request #5 superseded by #6",
                json!({"request": 5, "superseded_by": 6, "voided_approvals": 0}),
                None,
            ),
            (
                "rollback",
                "Ada rolled back to abc and pinned it",
                json!({"revision": "abc", "sync": 9}),
                Some("rollback_performed"),
            ),
            (
                "sync_refused",
                "guestbook is declared in Git and 1 of its 3 objects fall outside project `demo`'s bounds, so nothing is applied",
                json!({"digest": "d", "reason": "bounds"}),
                Some("sync_refused"),
            ),
            (
                "generator_refused",
                "refused metrics from apps.yaml#2 at abc: namespace `kube-system` is not among project `demo`'s destinations",
                json!({"origin": "apps.yaml#2", "revision": "abc", "name": "metrics"}),
                Some("declaration_refused"),
            ),
            ("webhook", "push webhook", json!({}), None),
        ];
        for (kind, message, detail, _) in &events {
            store
                .add_timeline("guestbook", kind, message, detail, now)
                .await
                .unwrap();
        }
        // The time-based triggers: a drift episode open for 10 minutes, a pin two hours old.
        store
            .open_drift_episode("podinfo", &json!([]), now - 10 * MINUTE)
            .await
            .unwrap()
            .unwrap();
        let pin = Pin {
            revision: "0123456789abcdef".into(),
            digest: "d".into(),
            pinned_by: "local:ada".into(),
            pinned_name: "Ada".into(),
            pinned_at: now - 120 * MINUTE,
            reason: "bad release".into(),
        };
        store
            .pin("podinfo", &pin, &audit("rollback"))
            .await
            .unwrap();
        notifier.watch().await.unwrap();
        notifier.watch().await.unwrap(); // fires nothing twice

        // The first two attempts are answered 500; the sender retries after 1 s, then 2 s.
        receiver.fail_next("/hook", 2);
        let expected = events.iter().filter(|e| e.3.is_some()).count() + 2;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while receiver.delivered("/hook").len() < expected && std::time::Instant::now() < deadline {
            notifier.step().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..5 {
            notifier.step().await.unwrap(); // nothing further may go out
        }
        let hook = receiver.delivered("/hook");
        let mut triggers: Vec<String> = hook
            .iter()
            .map(|r| r.json()["trigger"].as_str().unwrap().to_owned())
            .collect();
        triggers.sort();
        let mut want: Vec<String> = events
            .iter()
            .filter_map(|e| e.3.map(str::to_owned))
            .chain(["drift_stale".to_owned(), "pinned_long".to_owned()])
            .collect();
        want.sort();
        assert_eq!(
            triggers, want,
            "exactly one notification per notifiable event"
        );

        // Retries carry the same idempotency key; every key was delivered once.
        let failed: Vec<Received> = receiver
            .all()
            .into_iter()
            .filter(|r| r.status == 500)
            .collect();
        assert_eq!(failed.len(), 2);
        let mut keys: Vec<String> = hook.iter().map(Received::key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), hook.len());
        for f in &failed {
            assert!(
                keys.contains(&f.key()),
                "a failed attempt was retried with its key"
            );
        }
        for r in &hook {
            let failures = failed.iter().filter(|f| f.key() == r.key()).count();
            let attempt = (failures + 1).to_string();
            assert_eq!(r.headers["x-tidemark-attempt"], attempt.as_str());
        }

        for r in &hook {
            assert!(signature_valid(r, "s3cret"), "bad signature on {}", r.body);
            assert!(!signature_valid(r, "wrong"), "a wrong key must not verify");
            assert!(
                !r.body.contains("hunter2") && !r.body.contains("stolen"),
                "{}",
                r.body
            );
            let body = r.json();
            let url = body["url"].as_str().unwrap();
            assert!(
                url.starts_with("https://tidemark.example/applications/"),
                "{url}"
            );
            assert!(url.contains("?tab=timeline#e"), "{url}");
            assert_eq!(body["project"], "demo");
            assert_eq!(
                r.headers["x-tidemark-idempotency-key"],
                body["idempotency_key"].as_str().unwrap()
            );
        }
        let asked = hook
            .iter()
            .find(|r| r.json()["detail"]["request"] == 3)
            .unwrap()
            .json();
        assert_eq!(
            asked["detail"]["approvers"],
            json!(["platform", "security"])
        );
        let drift = hook
            .iter()
            .find(|r| r.json()["trigger"] == "drift_opened")
            .unwrap()
            .json();
        assert_eq!(drift["detail"]["resources"], json!(["Secret guestbook/db"]));
        let stale = hook
            .iter()
            .find(|r| r.json()["trigger"] == "drift_stale")
            .unwrap()
            .json();
        assert_eq!(stale["application"], "podinfo");
        assert!(
            stale["message"]
                .as_str()
                .unwrap()
                .contains("drift still open after 10m"),
            "{stale}"
        );
        let pinned = hook
            .iter()
            .find(|r| r.json()["trigger"] == "pinned_long")
            .unwrap()
            .json();
        assert!(
            pinned["message"]
                .as_str()
                .unwrap()
                .contains("pinned to 0123456 for 2h"),
            "{pinned}"
        );
        // The link names the timeline entry, which exists with that id.
        let entry: i64 = stale["url"]
            .as_str()
            .unwrap()
            .rsplit("#e")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let page = store
            .timeline_page("podinfo", None, 10, &[])
            .await
            .unwrap()
            .0;
        assert!(
            page.iter()
                .any(|e| e.id == entry && e.kind == "drift_stale"),
            "{page:?}"
        );

        // Slack got only its subscription (sync_failed of guestbook), as text and blocks.
        let chat = receiver.delivered("/chat");
        assert_eq!(chat.len(), 1, "{chat:?}");
        let slack = chat[0].json();
        assert!(
            slack["text"].as_str().unwrap().starts_with(
                "*Sync failed* — <https://tidemark.example/applications/guestbook?tab=timeline#e"
            ),
            "{slack}"
        );
        assert!(slack["blocks"][1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("event "));
        assert!(
            receiver.delivered("/elsewhere").is_empty(),
            "another project's subscription"
        );

        // The deliveries page's data: all delivered, the retried one after three attempts.
        let rows = store.recent_deliveries(100, false).await.unwrap();
        assert_eq!(rows.len(), expected + 1);
        assert!(rows.iter().all(|r| r.status == "delivered"), "{rows:?}");
        let attempts: i64 = rows.iter().map(|r| r.attempts).sum();
        assert_eq!(
            attempts,
            i64::try_from(rows.len() + 2).unwrap(),
            "two retries in all"
        );
        assert!(store.recent_deliveries(100, true).await.unwrap().is_empty());
        // Retention on this backend: everything finished before the cut-off goes.
        let purged = store.purge_notifications(now + 3_600_000).await.unwrap();
        assert_eq!(purged, u64::try_from(rows.len()).unwrap());
        assert!(store
            .recent_deliveries(100, false)
            .await
            .unwrap()
            .is_empty());
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_given_up_after_max_attempts_and_shown_with_its_error() {
    let db = TestDb::sqlite();
    let store = catalog_store(&db).await;
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let notifications = notification_settings(&format!(
        r#"
        max_attempts = 2
        retry_initial = "1s"
        [[targets]]
        name = "broken"
        type = "webhook"
        url = "{base}/broken"
        [[targets]]
        name = "fine"
        type = "webhook"
        url = "http://127.0.0.1:1/unreachable"
        [[subscriptions]]
        target = "broken"
        [[subscriptions]]
        target = "fine"
        "#,
        base = receiver.base
    ));
    let notifier = Notifier::build(
        store.clone(),
        &notifications,
        "http://127.0.0.1:3000",
        Arc::new(Metrics::new()),
        &|_| None,
    )
    .unwrap();
    store
        .add_timeline(
            "guestbook",
            "rollback",
            "rolled back",
            &json!({"revision": "abc"}),
            server::clock::now(),
        )
        .await
        .unwrap();
    for _ in 0..30 {
        notifier.step().await.unwrap();
        if store
            .recent_deliveries(10, true)
            .await
            .unwrap()
            .iter()
            .all(|d| d.status == "failed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = store.recent_deliveries(10, true).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!((r.status.as_str(), r.attempts), ("failed", 2), "{r:?}");
    }
    let broken = rows.iter().find(|r| r.target == "broken").unwrap();
    assert_eq!(
        broken.last_error.as_deref(),
        Some("HTTP 500: receiver is failing on purpose")
    );
    let unreachable = rows.iter().find(|r| r.target == "fine").unwrap();
    let error = unreachable.last_error.as_deref().unwrap();
    assert!(
        error.starts_with("connection failed: ") && error.contains("refused"),
        "{error}"
    );
    assert!(
        !error.contains("unreachable"),
        "no URL in errors (they can hold credentials): {error}"
    );
    assert_eq!(receiver.all().len(), 2);

    // Retention: finished deliveries older than the cut-off go, with their events; pending stay.
    store
        .add_timeline(
            "guestbook",
            "rollback",
            "again",
            &json!({}),
            server::clock::now(),
        )
        .await
        .unwrap();
    notifier.route().await.unwrap();
    let purged = store
        .purge_notifications(server::clock::now() + 1)
        .await
        .unwrap();
    assert_eq!(purged, 2);
    let left = store.recent_deliveries(10, false).await.unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left
        .iter()
        .all(|d| d.status == "pending" && d.message == "again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_outbox_rows_are_delivered_once_after_a_restart() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    settings.notifications = notification_settings(&format!(
        r#"
        retry_initial = "1s"
        [[targets]]
        name = "hook"
        type = "webhook"
        url = "{base}/hook"
        [[subscriptions]]
        target = "hook"
        "#,
        base = receiver.base
    ));
    let first_settings = settings;
    let first = TestServer::start(first_settings.clone()).await;
    let store = first.store.clone();
    for i in 0..3 {
        store
            .add_timeline(
                "guestbook",
                "rollback",
                &format!("rollback {i}"),
                &json!({}),
                server::clock::now(),
            )
            .await
            .unwrap();
    }
    // The receiver answers 500: each is attempted and stays pending.
    let started = std::time::Instant::now();
    while receiver.all().len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "not attempted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written while no Tidemark runs (committed, never routed).
    for i in 3..5 {
        store
            .add_timeline(
                "podinfo",
                "rollback",
                &format!("rollback {i}"),
                &json!({}),
                server::clock::now(),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.recent_deliveries(10, true).await.unwrap().len(), 3);
    let attempts_before = receiver.all().len();
    receiver.set_down(false);

    let _second = TestServer::start(first_settings).await;
    let delivered = receiver
        .wait_delivered("/hook", 5, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // time for a duplicate to show up
    let delivered_now = receiver.delivered("/hook");
    assert_eq!(
        delivered_now.len(),
        5,
        "each undelivered row exactly once: {delivered:?}"
    );
    let mut messages: Vec<String> = delivered_now
        .iter()
        .map(|r| r.json()["message"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        (0..5).map(|i| format!("rollback {i}")).collect::<Vec<_>>()
    );
    assert!(attempts_before >= 3);
    assert!(store.recent_deliveries(10, true).await.unwrap().is_empty());
}

/// aiosmtpd with STARTTLS required and a login, on a free port, with a certificate made here.
struct SmtpReceiver {
    port: u16,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl SmtpReceiver {
    async fn start(password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/smtp_receiver.py"
        );
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(&cert)
            .arg(&key)
            .arg(port.to_string())
            .arg(password)
            .arg(dir.path().join("mail.jsonl"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (aiosmtpd is installed by scripts/setup.sh)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("aiosmtpd did not start within 20 s")
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "aiosmtpd failed to start (is it installed? run scripts/setup.sh)"
        );
        Self { port, dir, child }
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn mails(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("mail.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_out_over_starttls_with_a_login_from_a_secret_file() {
    let smtp = SmtpReceiver::start("mail-secret").await;
    let db = TestDb::sqlite();
    let store = catalog_store(&db).await;
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("smtp-password");
    std::fs::write(&password_file, "mail-secret\n").unwrap();
    let mail_settings = |password_file: &std::path::Path| {
        notification_settings(&format!(
            r#"
            retry_initial = "1s"
            [[targets]]
            name = "mail"
            type = "email"
            smtp_host = "127.0.0.1"
            smtp_port = {port}
            ca_file = "{ca}"
            username = "tidemark"
            password_file = "{password}"
            from = "Tidemark <tidemark@example.com>"
            to = ["oncall@example.com", "Platform <platform@example.com>"]
            [[subscriptions]]
            target = "mail"
            triggers = ["sync_failed"]
            "#,
            port = smtp.port,
            ca = smtp.cert().display(),
            password = password_file.display()
        ))
    };
    let notifier = Notifier::build(
        store.clone(),
        &mail_settings(&password_file),
        "https://tidemark.example",
        Arc::new(Metrics::new()),
        &|_| None,
    )
    .unwrap();
    store
        .add_timeline(
            "guestbook",
            "sync",
            "sync of 0123456789ab failed: 1 of 3 resources failed",
            &json!({"sync": 12, "status": "failed"}),
            server::clock::now(),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        notifier.step().await.unwrap();
        if !smtp.mails().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        store.recent_deliveries(5, false).await.unwrap()
    );
    let mail = &mails[0];
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["authenticated"], true);
    assert_eq!(
        mail["to"],
        json!(["oncall@example.com", "platform@example.com"])
    );
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [Tidemark] Sync failed: guestbook"),
        "{data}"
    );
    assert!(
        data.contains("https://tidemark.example/applications/guestbook?tab=timeline#e"),
        "{data}"
    );
    let key = store.recent_deliveries(1, false).await.unwrap()[0].id;
    assert!(key > 0);
    assert!(
        data.contains("Message-ID: <") && data.contains("@tidemark>"),
        "{data}"
    );

    // A wrong password: the server refuses, the delivery stays pending with the reason.
    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let notifier = Notifier::build(
        store.clone(),
        &mail_settings(&wrong),
        "https://tidemark.example",
        Arc::new(Metrics::new()),
        &|_| None,
    )
    .unwrap();
    store
        .add_timeline(
            "guestbook",
            "sync",
            "sync failed again",
            &json!({"status": "failed"}),
            server::clock::now(),
        )
        .await
        .unwrap();
    notifier.step().await.unwrap();
    notifier.step().await.unwrap();
    let pending = store.recent_deliveries(5, true).await.unwrap();
    assert_eq!(pending.len(), 1);
    let error = pending[0].last_error.as_deref().unwrap_or_default();
    assert!(error.starts_with("SMTP"), "{error}");
    assert!(!error.contains("nope"), "{error}");
    assert_eq!(smtp.mails().len(), 1);

    // A missing secret stops start-up with the target named.
    let err = Notifier::build(
        store.clone(),
        &mail_settings(&secrets.path().join("missing")),
        "https://tidemark.example",
        Arc::new(Metrics::new()),
        &|_| None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("notification target `mail`: cannot read the SMTP password file"),
        "{err}"
    );
}

/// Reads one sample of `/metrics` (`None` when the series is absent).
async fn sample(server: &TestServer, series: &str) -> Option<f64> {
    let text = server
        .anonymous
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

async fn wait_sample(server: &TestServer, series: &str, want: f64) {
    for _ in 0..150 {
        if sample(server, series).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{series} never became {want} (is {:?})",
        sample(server, series).await
    );
}

/// The count of timeline events of `app` that fire `trigger` (what the receiver must have got).
async fn fired(store: &Store, app: &str, trigger: Trigger) -> usize {
    let page = store.timeline_page(app, None, 500, &[]).await.unwrap().0;
    page.iter()
        .filter(|e| server::notify::trigger_of(&e.kind, &e.detail) == Some(trigger))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tidemark_notifies_approvals_drift_and_rollback_and_its_metrics_follow_the_cluster(
) {
    use crate::reconcile::{approvers, decide, fixture_approvals, scale_by_hand, APP};
    let policy = server::config::ApprovalPolicy {
        required: 2,
        ..Default::default()
    };
    let mut f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let receiver = Receiver::start().await;
    // A target that accepts connections and never answers: it must hold up neither the
    // reconciler nor the other target.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let black_hole_url = format!("http://{}/hook", black_hole.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = black_hole.accept().await {
            open.push(conn);
        }
    });
    f.settings.reconcile.interval_secs = 1;
    f.settings.notifications = notification_settings(&format!(
        r#"
        drift_stale_after = "2s"
        pinned_after = "2s"
        retry_initial = "1s"
        [[targets]]
        name = "hook"
        type = "webhook"
        url = "{base}/hook"
        [[targets]]
        name = "black-hole"
        type = "webhook"
        url = "{black_hole_url}"
        [[subscriptions]]
        target = "hook"
        triggers = {all:?}
        [[subscriptions]]
        target = "black-hole"
        "#,
        base = receiver.base,
        all = Trigger::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>()
    ));
    let (server, people) = approvers(&f).await;
    let g = |name: &str| format!(r#"{name}{{application="guestbook",project="demo"}}"#);
    let s = |name: &str, status: &str| {
        format!(r#"{name}{{application="guestbook",project="demo",status="{status}"}}"#)
    };

    // Never deployed: a sync request waits for two approvals.
    let asked = receiver
        .wait_delivered("/hook", 1, Duration::from_secs(20))
        .await;
    assert_eq!(asked[0].json()["trigger"], "approval_requested");
    wait_sample(&server, &g("tidemark_app_pending_approvals"), 1.0).await;
    wait_sample(&server, &s("tidemark_app_sync_status", "OutOfSync"), 1.0).await;
    let first = f
        .store
        .sync_requests(Some(server::store::RequestStatus::Pending), None, None, 1)
        .await
        .unwrap()[0]
        .id;
    for who in ["alice", "bob"] {
        assert_eq!(
            decide(&server, &people[who], first, "approve", None)
                .await
                .0,
            200
        );
    }
    wait_sample(&server, &s("tidemark_app_sync_status", "Synced"), 1.0).await;
    wait_sample(&server, &s("tidemark_app_health_status", "Healthy"), 1.0).await;
    wait_sample(&server, &g("tidemark_app_pending_approvals"), 0.0).await;
    assert!(
        sample(
            &server,
            &g("tidemark_app_last_successful_sync_timestamp_seconds")
        )
        .await
        .unwrap()
            > 1.7e9
    );
    for _ in 0..100 {
        if !f
            .store
            .known_good_revisions("guestbook")
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Drift: opened, then still open after 2 s; a request to undo it waits for approvals.
    scale_by_hand(&f, 5).await;
    wait_sample(&server, &g("tidemark_app_drift_open"), 1.0).await;
    wait_sample(&server, &s("tidemark_app_sync_status", "OutOfSync"), 1.0).await;
    wait_sample(&server, &g("tidemark_app_pending_approvals"), 1.0).await;
    let drift_request = f
        .store
        .sync_requests(Some(server::store::RequestStatus::Pending), None, None, 1)
        .await
        .unwrap()[0]
        .id;
    assert_eq!(
        decide(&server, &people["alice"], drift_request, "approve", None)
            .await
            .0,
        200
    );
    for _ in 0..100 {
        if fired(&f.store, "guestbook", Trigger::DriftStale).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sample(&server, &g("tidemark_app_drift_age_seconds"))
            .await
            .unwrap()
            >= 2.0
    );

    // A new commit supersedes the approved drift request: its approval is void.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &APP.replace("replicas: 2", "replicas: 4"),
    );
    f.repo.commit("scale to 4");
    let refresh = server
        .client
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 202);
    for _ in 0..100 {
        if fired(&f.store, "guestbook", Trigger::ApprovalVoided).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Roll back to the known-good revision: pinned, drift closed; pinned for long after 2 s.
    let good = f.store.known_good_revisions("guestbook").await.unwrap()[0]
        .revision
        .clone();
    let rollback = people["alice"]
        .post(format!(
            "{}/api/v1/applications/guestbook/rollback",
            server.base
        ))
        .header("origin", &server.base)
        .json(&json!({"revision": good, "reason": "scaled by hand, then a bad commit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), 200, "{}", rollback.text().await.unwrap());
    wait_sample(&server, &g("tidemark_app_pinned"), 1.0).await;
    wait_sample(&server, &g("tidemark_app_drift_open"), 0.0).await;
    for _ in 0..100 {
        if fired(&f.store, "guestbook", Trigger::PinnedLong).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Exactly one notification per notifiable timeline event, of each kind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0;
    for trigger in Trigger::ALL {
        let want = fired(&f.store, "guestbook", trigger).await;
        let got = receiver
            .delivered("/hook")
            .iter()
            .filter(|r| r.json()["trigger"] == trigger.as_str())
            .count();
        assert_eq!(got, want, "{trigger:?}: {want} events, {got} notifications");
        total += want;
    }
    for t in [
        Trigger::ApprovalRequested,
        Trigger::SyncSucceeded,
        Trigger::DriftOpened,
        Trigger::DriftStale,
        Trigger::ApprovalVoided,
        Trigger::RollbackPerformed,
        Trigger::PinnedLong,
    ] {
        assert!(
            fired(&f.store, "guestbook", t).await >= 1,
            "{t:?} never fired"
        );
    }
    assert_eq!(receiver.delivered("/hook").len(), total);
    let stuck = f.store.recent_deliveries(500, true).await.unwrap();
    assert!(
        !stuck.is_empty() && stuck.iter().all(|d| d.target == "black-hole"),
        "only the black hole is behind: {stuck:?}"
    );
    let text = server
        .anonymous
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"tidemark_reconcile_duration_seconds_count{application="guestbook",project="demo"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tidemark_notification_attempts_total{target="hook",outcome="delivered"}"#),
        "{text}"
    );
}

/// A rollback reason and a commit title as people and Git write them, hostile to every format.
const HOSTILE_REASON: &str = "<!channel> <https://evil.example|Click here> &amp; <@U123>";
const HOSTILE_TITLE: &str = "fix\r\nBcc: evil@example.com <script>alert(1)</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_rollback_reason_reaches_slack_escaped_and_e_mail_without_an_injected_header() {
    let receiver = Receiver::start().await;
    let smtp = SmtpReceiver::start("mail-secret").await;
    let db = TestDb::sqlite();
    let store = catalog_store(&db).await;
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("smtp-password");
    std::fs::write(&password_file, "mail-secret").unwrap();
    let notifications = notification_settings(&format!(
        r#"
        [[targets]]
        name = "chat"
        type = "slack"
        url = "{base}/chat"
        [[targets]]
        name = "hook"
        type = "webhook"
        url = "{base}/hook"
        [[targets]]
        name = "mail"
        type = "email"
        smtp_host = "127.0.0.1"
        smtp_port = {port}
        ca_file = "{ca}"
        username = "tidemark"
        password_file = "{password}"
        from = "Tidemark <tidemark@example.com>"
        to = ["oncall@example.com"]
        [[subscriptions]]
        target = "chat"
        [[subscriptions]]
        target = "hook"
        [[subscriptions]]
        target = "mail"
        "#,
        base = receiver.base,
        port = smtp.port,
        ca = smtp.cert().display(),
        password = password_file.display()
    ));
    let notifier = Notifier::build(
        store.clone(),
        &notifications,
        "https://tidemark.example",
        Arc::new(Metrics::new()),
        &|_| None,
    )
    .unwrap();
    // What the workflow writes for a rollback: the commit title and the reason, quoted.
    let text =
        format!("Ada rolled back to 0123456 \"{HOSTILE_TITLE}\" and pinned it: {HOSTILE_REASON}");
    store
        .add_timeline(
            "guestbook",
            "rollback",
            &text,
            &json!({"revision": "0123456", "sync": 9, "reason": HOSTILE_REASON}),
            server::clock::now(),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        notifier.step().await.unwrap();
        if !smtp.mails().is_empty() && receiver.delivered("/chat").len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let chat = receiver
        .wait_delivered("/chat", 1, Duration::from_secs(5))
        .await;
    let slack = chat[0].json();
    for text in [
        slack["text"].as_str().unwrap(),
        slack["blocks"][0]["text"]["text"].as_str().unwrap(),
    ] {
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<@U123>"), "{text}");
        assert!(!text.contains("<https://evil"), "{text}");
        assert!(
            text.contains(
                "&lt;!channel&gt; &lt;https://evil.example|Click here&gt; &amp;amp; &lt;@U123&gt;"
            ),
            "{text}"
        );
        assert!(text.contains("&lt;script&gt;"), "{text}");
        assert_eq!(
            text.matches('<').count(),
            1,
            "only Tidemark's own link: {text}"
        );
    }

    // The generic webhook is JSON: the text arrives exactly as written.
    let hook = receiver
        .wait_delivered("/hook", 1, Duration::from_secs(5))
        .await;
    assert_eq!(hook[0].json()["message"], text);

    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        store.recent_deliveries(5, false).await.unwrap()
    );
    assert_eq!(
        mails[0]["to"],
        json!(["oncall@example.com"]),
        "no injected recipient"
    );
    let data = mails[0]["data"].as_str().unwrap();
    let (headers, body) = data
        .split_once("\r\n\r\n")
        .or_else(|| data.split_once("\n\n"))
        .unwrap();
    let names: Vec<String> = headers
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
        .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
        .collect();
    assert!(!names.iter().any(|n| n == "bcc"), "{headers}");
    assert!(
        body.contains("Bcc: evil@example.com <script>"),
        "the reason is kept as text: {body}"
    );
}
