//! Notifications: which timeline events are worth telling people about ([`Trigger`]), who gets
//! them ([`Routes`]) and the sender that delivers the outbox at least once.
//!
//! The store writes an outbox row in the same transaction as each notifiable timeline row; the
//! time-based triggers (drift still open, pinned for long) are written by [`Notifier`]'s watch.
//! The sender runs on its own task: a slow or failing target delays only its own deliveries,
//! never reconciliation.

mod send;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::config::{NotificationSettings, NotificationTimes, Subscription};
use crate::store::{Delivery, Store, StoreError};
pub use send::{header_text, plain_text, sign, slack_escape, Message, Target, TargetError};

pub use crate::domain::triggers::{safe_detail, trigger_of, Trigger};

/// Which targets get an event: the subscriptions, checked once at start.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    subscriptions: Vec<Subscription>,
}

impl Routes {
    pub fn new(settings: &NotificationSettings) -> Self {
        Self {
            subscriptions: settings.subscriptions.clone(),
        }
    }

    /// The targets (each once) subscribed to `trigger` for this application.
    pub fn targets(&self, trigger: Trigger, project: &str, app: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|s| s.projects.is_empty() || s.projects.iter().any(|p| p == project))
            .filter(|s| s.applications.is_empty() || s.applications.iter().any(|a| a == app))
            .filter(|s| match &s.triggers {
                Some(list) => list.contains(&trigger),
                None => trigger != Trigger::SyncSucceeded,
            })
            .map(|s| s.target.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A subscription in one line: "project web · application shop · sync_failed, drift_opened".
pub fn describe_subscription(s: &Subscription) -> String {
    let mut parts = Vec::new();
    if !s.projects.is_empty() {
        parts.push(format!("project {}", s.projects.join(", ")));
    }
    if !s.applications.is_empty() {
        parts.push(format!("application {}", s.applications.join(", ")));
    }
    if parts.is_empty() {
        parts.push("every application".into());
    }
    parts.push(match &s.triggers {
        Some(list) => list
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        None => "every trigger but sync_succeeded".into(),
    });
    parts.join(" · ")
}

/// `name` as one URL path segment: everything but unreserved characters percent-encoded, so a
/// name cannot change the link's path, query or fragment (nor close a Slack link with `>`/`|`).
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Backoff before attempt `attempts + 1`: `initial · 2^(attempts-1)`, at most `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    initial.saturating_mul(factor).min(max)
}

/// The sender and the time-based triggers' watch, as one task.
pub struct Notifier {
    store: Store,
    routes: Routes,
    targets: BTreeMap<String, Arc<Target>>,
    times: NotificationTimes,
    max_attempts: u32,
    public_url: String,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// How often the outbox is looked at (new events are delivered within about this long).
const TICK: Duration = Duration::from_millis(500);
/// Aborts the tasks it holds when dropped (the sender's per-target workers).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How long a sender holds a claimed delivery before another may try it (HA replicas).
const LEASE_MS: i64 = 60_000;
/// Every attempt gives up after this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

impl Notifier {
    /// Resolves every target's URL and credentials (from env or files): a missing one stops
    /// start-up with the target named.
    pub fn build(
        store: Store,
        settings: &NotificationSettings,
        public_url: &str,
        metrics: Arc<crate::telemetry::Metrics>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TargetError> {
        let mut targets = BTreeMap::new();
        for t in &settings.targets {
            targets.insert(t.name.clone(), Arc::new(Target::build(t, env)?));
        }
        Ok(Self {
            store,
            routes: Routes::new(settings),
            targets,
            times: settings.durations(),
            max_attempts: settings.max_attempts.max(1),
            public_url: public_url.trim_end_matches('/').to_owned(),
            metrics,
        })
    }

    /// Runs until the handle is aborted: one task routes new events and fires the time-based
    /// triggers; each target has its own delivery task, so a slow or failing target delays only
    /// its own deliveries.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let me = Arc::new(self);
        tokio::spawn(async move {
            let workers = me
                .targets
                .keys()
                .map(|name| {
                    let (me, name) = (me.clone(), name.clone());
                    tokio::spawn(async move {
                        loop {
                            if let Err(e) = me.deliver(&name).await {
                                tracing::warn!(target = %name, error = %e, "notification delivery failed");
                            }
                            tokio::time::sleep(TICK).await;
                        }
                    })
                })
                .collect();
            let _workers = AbortOnDrop(workers);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut since_watch = Duration::MAX;
            loop {
                tick.tick().await;
                since_watch = since_watch.saturating_add(TICK);
                if since_watch >= Duration::from_secs(5) {
                    since_watch = Duration::ZERO;
                    if let Err(e) = me.watch().await {
                        tracing::warn!(error = %e, "notification watch failed");
                    }
                }
                if let Err(e) = me.route().await {
                    tracing::warn!(error = %e, "notification routing failed");
                }
            }
        })
    }

    /// Writes the time-based events that are due (each exactly once).
    pub async fn watch(&self) -> Result<(), StoreError> {
        let now = clock::now();
        let stale_ms = i64::try_from(self.times.drift_stale_after.as_millis()).unwrap_or(i64::MAX);
        let pinned_ms = i64::try_from(self.times.pinned_after.as_millis()).unwrap_or(i64::MAX);
        self.store.fire_stale_drift(now, stale_ms).await?;
        self.store.fire_long_pins(now, pinned_ms).await?;
        Ok(())
    }

    /// Gives new outbox events their deliveries (one per subscribed target), and gives up the
    /// pending deliveries of targets no longer configured.
    pub async fn route(&self) -> Result<(), StoreError> {
        let now = clock::now();
        for event in self.store.unrouted_notifications(100).await? {
            let trigger = Trigger::parse(&event.trigger);
            let targets = trigger
                .map(|t| self.routes.targets(t, &event.project, &event.application))
                .unwrap_or_default();
            let known: Vec<String> = targets
                .into_iter()
                .filter(|t| self.targets.contains_key(t))
                .collect();
            self.store.route_notification(event.id, &known, now).await?;
        }
        let configured: Vec<&str> = self.targets.keys().map(String::as_str).collect();
        self.store.abandon_unconfigured(&configured, now).await?;
        Ok(())
    }

    /// Attempts every due delivery of one target, oldest event first.
    pub async fn deliver(&self, name: &str) -> Result<(), StoreError> {
        let Some(target) = self.targets.get(name) else {
            return Ok(());
        };
        for d in self.store.due_deliveries(name, clock::now(), 100).await? {
            self.attempt(target, d).await?;
        }
        Ok(())
    }

    /// One round of everything, as the tasks of [`Notifier::spawn`] do it (tests drive this).
    pub async fn step(&self) -> Result<(), StoreError> {
        self.route().await?;
        let runs = self.targets.keys().map(|name| self.deliver(name));
        for result in futures_util::future::join_all(runs).await {
            result?;
        }
        Ok(())
    }

    async fn attempt(&self, target: &Target, d: Delivery) -> Result<(), StoreError> {
        let now = clock::now();
        // Claim: another replica that read the same row loses this update and skips it.
        if !self
            .store
            .claim_delivery(d.id, d.next_attempt_at, now + LEASE_MS)
            .await?
        {
            return Ok(());
        }
        let message = Message {
            idempotency_key: d.idempotency_key.clone(),
            trigger: Trigger::parse(&d.trigger).unwrap_or(Trigger::DriftOpened),
            application: d.application.clone(),
            project: d.project.clone(),
            occurred_at: d.occurred_at,
            text: d.message.clone(),
            url: format!(
                "{}/applications/{}?tab=timeline#e{}",
                self.public_url,
                path_segment(&d.application),
                d.timeline_id
            ),
            detail: d.detail.clone(),
            attempt: d.attempts + 1,
        };
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, target.send(&message))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())));
        let attempts = d.attempts + 1;
        let done = clock::now();
        match result {
            Ok(()) => {
                self.store.delivery_succeeded(d.id, attempts, done).await?;
                self.metrics.observe_delivery(&d.target, "delivered");
                tracing::info!(target = %d.target, trigger = %d.trigger, app = %d.application, attempts, "notification delivered");
            }
            Err(error) => {
                let retry = (attempts < i64::from(self.max_attempts)).then(|| {
                    let wait = backoff(
                        u32::try_from(attempts).unwrap_or(u32::MAX),
                        self.times.retry_initial,
                        self.times.retry_max,
                    );
                    done + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
                });
                tracing::warn!(target = %d.target, trigger = %d.trigger, app = %d.application, attempts, %error, given_up = retry.is_none(), "notification not delivered");
                let outcome = if retry.is_some() { "retry" } else { "failed" };
                self.metrics.observe_delivery(&d.target, outcome);
                self.store
                    .delivery_failed(d.id, attempts, &error, retry, done)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeline_kinds_map_to_triggers() {
        assert_eq!(
            trigger_of("sync", &json!({"status": "failed"})),
            Some(Trigger::SyncFailed)
        );
        assert_eq!(
            trigger_of("sync", &json!({"status": "succeeded"})),
            Some(Trigger::SyncSucceeded)
        );
        assert_eq!(
            trigger_of("health", &json!({"health": "Degraded"})),
            Some(Trigger::HealthDegraded)
        );
        assert_eq!(trigger_of("health", &json!({"health": "Healthy"})), None);
        assert_eq!(
            trigger_of(
                "sync_request_superseded",
                &json!({"request": 1, "superseded_by": 2, "voided_approvals": 1})
            ),
            Some(Trigger::ApprovalVoided)
        );
        assert_eq!(
            trigger_of(
                "sync_request_superseded",
                &json!({"request": 1, "superseded_by": 2, "voided_approvals": 0})
            ),
            None
        );
        assert_eq!(
            trigger_of("sync_request_superseded", &json!({"request": 1})),
            None
        );
        assert_eq!(trigger_of("webhook", &json!({})), None);
        assert_eq!(
            trigger_of("sync_refused", &json!({"digest": "d"})),
            Some(Trigger::SyncRefused)
        );
        assert_eq!(
            trigger_of("generator_refused", &json!({"revision": "abc"})),
            Some(Trigger::DeclarationRefused)
        );
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn safe_detail_names_resources_and_drops_their_contents() {
        let detail = json!({"episode": 3, "resources": [{"object": {"kind": "Secret", "namespace": "web", "name": "db"},
            "changes": [{"path": "data.password", "desired": "hunter2", "live": "other"}]}], "by": "local:ann"});
        let safe = safe_detail(&detail);
        assert_eq!(safe, json!({"episode": 3, "resources": ["Secret web/db"]}));
        assert!(!safe.to_string().contains("hunter2"));
    }

    #[test]
    fn subscriptions_filter_by_project_application_and_trigger() {
        let settings: NotificationSettings = toml::from_str(
            r#"
            [[subscriptions]]
            target = "all"
            [[subscriptions]]
            target = "web-failures"
            projects = ["web"]
            triggers = ["sync_failed", "sync_succeeded"]
            [[subscriptions]]
            target = "one-app"
            applications = ["shop"]
            "#,
        )
        .unwrap();
        let routes = Routes::new(&settings);
        assert_eq!(
            routes.targets(Trigger::SyncFailed, "web", "shop"),
            ["all", "one-app", "web-failures"]
        );
        assert_eq!(
            routes.targets(Trigger::SyncSucceeded, "web", "shop"),
            ["web-failures"]
        );
        assert_eq!(routes.targets(Trigger::DriftOpened, "ops", "db"), ["all"]);
    }

    #[test]
    fn messages_link_the_entry_and_name_the_approvers() {
        let m = Message {
            idempotency_key: "k-1".into(),
            trigger: Trigger::ApprovalRequested,
            application: "shop".into(),
            project: "web".into(),
            occurred_at: 0,
            text: "sync request #3 waits for 2 approval(s)".into(),
            url: "https://t.example/applications/shop?tab=timeline#e9".into(),
            detail: json!({"request": 3, "approvers": ["platform", "security"]}),
            attempt: 1,
        };
        let slack = m.slack();
        assert_eq!(
            slack["text"],
            "*Approval requested* — <https://t.example/applications/shop?tab=timeline#e9|shop> (web): \
             sync request #3 waits for 2 approval(s)\nApprovers: platform, security"
        );
        assert_eq!(m.json()["idempotency_key"], "k-1");
        assert!(m.mail_body().contains("approvers: platform, security"));
        assert!(m.mail_body().ends_with("Tidemark event k-1\n"));
    }

    #[test]
    fn an_application_name_cannot_change_the_link_it_sits_in() {
        assert_eq!(path_segment("shop-1"), "shop-1");
        assert_eq!(
            path_segment("a>|b/../c?x#y\r\n"),
            "a%3E%7Cb%2F..%2Fc%3Fx%23y%0D%0A"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (i, m) = (Duration::from_secs(2), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=7).map(|a| backoff(a, i, m).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
    }
}
