//! Logs (tracing, filtered by `RUST_LOG`) and Prometheus metrics for `/metrics`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Installs the global log subscriber (stderr). Safe to call more than once.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    application: String,
    project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppStateLabels {
    application: String,
    project: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    application: String,
    project: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    target: String,
    outcome: String,
}

fn reconcile_histogram() -> Histogram {
    // 5 ms … ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// One application's state as `/metrics` reports it (read from the store at each scrape).
#[derive(Debug, Clone)]
pub struct AppGauges {
    pub application: String,
    pub project: String,
    /// Synced | OutOfSync | Unknown (not compared yet: Unknown).
    pub sync_status: String,
    /// Healthy | Progressing | Degraded | Missing | Unknown.
    pub health: String,
    /// When the open drift episode started (ms), if one is open.
    pub drift_since: Option<i64>,
    /// Sync requests waiting for approvals.
    pub pending_requests: i64,
    pub pinned: bool,
    /// When the last successful sync finished (ms).
    pub last_synced_at: Option<i64>,
}

const SYNC_STATES: [&str; 3] = ["Synced", "OutOfSync", "Unknown"];
const HEALTH_STATES: [&str; 5] = ["Healthy", "Progressing", "Degraded", "Missing", "Unknown"];

/// The per-application families (label sets replaced at every scrape, so removed applications
/// disappear).
#[derive(Default)]
struct AppFamilies {
    sync_status: Family<AppStateLabels, Gauge>,
    health: Family<AppStateLabels, Gauge>,
    drift_open: Family<AppLabels, Gauge>,
    drift_age: Family<AppLabels, Gauge>,
    pending: Family<AppLabels, Gauge>,
    pinned: Family<AppLabels, Gauge>,
    last_sync: Family<AppLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Process-wide metrics, rendered in the Prometheus text format.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    apps: AppFamilies,
    reconcile_duration: Family<AppLabels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with Tidemark's HTTP metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidemark");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method and route",
            latency.clone(),
        );
        let apps = AppFamilies::default();
        let per_app: [(&str, &str, &Family<AppLabels, Gauge>); 5] = [
            (
                "app_drift_open",
                "1 while a drift episode is open",
                &apps.drift_open,
            ),
            (
                "app_drift_age_seconds",
                "Age of the open drift episode (0: none)",
                &apps.drift_age,
            ),
            (
                "app_pending_approvals",
                "Sync requests waiting for approvals",
                &apps.pending,
            ),
            (
                "app_pinned",
                "1 while a rollback pins the application",
                &apps.pinned,
            ),
            (
                "app_last_successful_sync_timestamp_seconds",
                "When the last successful sync finished (Unix seconds; 0: never)",
                &apps.last_sync,
            ),
        ];
        for (name, help, family) in per_app {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "app_sync_status",
            "1 for the application's sync status (Synced, OutOfSync, Unknown)",
            apps.sync_status.clone(),
        );
        registry.register(
            "app_health_status",
            "1 for the application's health (Healthy, Progressing, Degraded, Missing, Unknown)",
            apps.health.clone(),
        );
        let reconcile_duration: Family<AppLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile step took, by application",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile steps that failed, by application and kind (store, cluster, render, snapshot)",
            reconcile_errors.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by target and outcome (delivered, retry, failed)",
            deliveries.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            apps,
            reconcile_duration,
            reconcile_errors,
            deliveries,
        }
    }

    /// Records one reconcile step of an application: its duration and, if it failed, the kind.
    pub fn observe_reconcile(
        &self,
        application: &str,
        project: &str,
        elapsed: Duration,
        error_kind: Option<&str>,
    ) {
        let labels = AppLabels {
            application: application.to_owned(),
            project: project.to_owned(),
        };
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error_kind {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    application: labels.application,
                    project: labels.project,
                    kind: kind.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one notification attempt.
    pub fn observe_delivery(&self, target: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                target: target.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Replaces the per-application gauges with `apps` (called before each scrape renders).
    pub fn set_apps(&self, apps: &[AppGauges], now_ms: i64) {
        // Held so two scrapes do not interleave their clear-and-fill.
        let _registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let f = &self.apps;
        for family in [
            &f.drift_open,
            &f.drift_age,
            &f.pending,
            &f.pinned,
            &f.last_sync,
        ] {
            family.clear();
        }
        f.sync_status.clear();
        f.health.clear();
        for a in apps {
            let labels = AppLabels {
                application: a.application.clone(),
                project: a.project.clone(),
            };
            let one_hot =
                |family: &Family<AppStateLabels, Gauge>, states: &[&str], current: &str| {
                    for state in states {
                        family
                            .get_or_create(&AppStateLabels {
                                application: a.application.clone(),
                                project: a.project.clone(),
                                status: (*state).to_owned(),
                            })
                            .set(i64::from(*state == current));
                    }
                };
            one_hot(&f.sync_status, &SYNC_STATES, &a.sync_status);
            one_hot(&f.health, &HEALTH_STATES, &a.health);
            f.drift_open
                .get_or_create(&labels)
                .set(i64::from(a.drift_since.is_some()));
            f.drift_age
                .get_or_create(&labels)
                .set(a.drift_since.map_or(0, |t| (now_ms - t).max(0) / 1000));
            f.pending.get_or_create(&labels).set(a.pending_requests);
            f.pinned.get_or_create(&labels).set(i64::from(a.pinned));
            f.last_sync
                .get_or_create(&labels)
                .set(a.last_synced_at.map_or(0, |t| t / 1000));
        }
    }

    /// Records one served request. `route` is the matched route pattern, never the raw path
    /// (which would let any client create unbounded label values).
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::new();
        m.observe_request("GET", "/healthz", 200, Duration::from_millis(2));
        m.observe_request("GET", "/healthz", 200, Duration::from_millis(3));
        m.observe_request("BREW", "/x", 418, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                r#"tidemark_http_requests_total{method="GET",route="/healthz",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        assert!(
            text.contains("tidemark_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn application_gauges_are_one_hot_and_replaced_each_scrape() {
        let m = Metrics::new();
        let app = |name: &str, health: &str| AppGauges {
            application: name.into(),
            project: "web".into(),
            sync_status: "OutOfSync".into(),
            health: health.into(),
            drift_since: Some(10_000),
            pending_requests: 1,
            pinned: false,
            last_synced_at: None,
        };
        m.set_apps(&[app("shop", "Degraded"), app("blog", "Healthy")], 70_000);
        let text = m.render();
        for line in [
            r#"tidemark_app_health_status{application="shop",project="web",status="Degraded"} 1"#,
            r#"tidemark_app_health_status{application="shop",project="web",status="Healthy"} 0"#,
            r#"tidemark_app_sync_status{application="shop",project="web",status="OutOfSync"} 1"#,
            r#"tidemark_app_drift_age_seconds{application="shop",project="web"} 60"#,
            r#"tidemark_app_pending_approvals{application="blog",project="web"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        m.set_apps(&[app("blog", "Healthy")], 70_000);
        assert!(!m.render().contains(r#"application="shop""#));
        m.observe_reconcile("blog", "web", Duration::from_millis(30), Some("cluster"));
        let text = m.render();
        assert!(text.contains(r#"tidemark_reconcile_errors_total{application="blog",project="web",kind="cluster"} 1"#), "{text}");
        assert!(
            text.contains("tidemark_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn the_example_alert_rules_name_only_series_tidemark_exports() {
        let m = Metrics::new();
        m.set_apps(
            &[AppGauges {
                application: "shop".into(),
                project: "web".into(),
                sync_status: "Synced".into(),
                health: "Healthy".into(),
                drift_since: None,
                pending_requests: 0,
                pinned: false,
                last_synced_at: Some(1),
            }],
            2,
        );
        m.observe_reconcile("shop", "web", Duration::from_millis(5), Some("store"));
        m.observe_delivery("hook", "failed");
        let exported = m.render();
        let rules: serde_json::Value =
            serde_saphyr::from_str(include_str!("../../deploy/prometheus/tidemark-rules.yaml"))
                .unwrap();
        let mut checked = 0;
        for group in rules["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let expr = rule["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("tidemark_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        exported.contains(&format!("\n{name}{{")),
                        "{name} (rule {}) is not exported",
                        rule["alert"]
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 9, "{checked}");
    }
}
