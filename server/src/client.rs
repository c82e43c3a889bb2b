//! The `tidemark` command-line client: every dashboard action over the REST API of a running
//! Tidemark (`tidemark app …`, `tidemark request …`, `tidemark audit list|export|verify
//! --remote`), for pipelines and chat ops.
//!
//! The server and token come from `--server` / `TIDEMARK_SERVER` and `--token` /
//! `TIDEMARK_TOKEN` (an API token from `tidemark token create`). Output is a table by default,
//! `-o json` or `-o yaml` prints the server's answer. Errors print the server's message on one
//! line. Exit codes ([`ClientError::exit_code`]) are part of the interface:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | any other error: the server cannot be reached, answered 5xx, 400 or 404 |
//! | 2 | `wait` timed out |
//! | 3 | unhealthy: `wait --healthy` saw the application Degraded once synced, or a sync failed |
//! | 4 | refused: not signed in or not allowed (401, 403), or refused by policy (409: approvals pending, unsigned revision, not a known-good revision…) |
//! | 64 | usage: unknown command or option |

use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// Where and as whom: shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Tidemark's URL, e.g. `https://tidemark.example.com`.
    #[arg(long, env = "TIDEMARK_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// An API token (`tidemark token create`), sent as `Authorization: Bearer`.
    #[arg(long, env = "TIDEMARK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The server's JSON answer, pretty-printed.
    Json,
    /// The same as YAML.
    Yaml,
}

/// `tidemark app …`
#[derive(Debug, Clone, Subcommand)]
pub enum AppCommand {
    /// Applications you may see: name, project, sync status, health, target.
    List,
    /// One application: source, status, pin, signature verdict, who declared it.
    Get { name: String },
    /// What a sync would change (the live cluster against Git's target), or between two
    /// revisions with --from and --to.
    Diff {
        name: String,
        #[arg(long, requires = "to")]
        from: Option<String>,
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// The application's timeline, newest first.
    History {
        name: String,
        /// Entries to show (at most 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Sync the target revision now (applications needing approvals answer 409: exit 4).
    Sync {
        name: String,
        /// Show what would change; apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fetch the application's repository now.
    Refresh { name: String },
    /// Approve the application's open sync request (or --request ID).
    Approve {
        name: String,
        #[arg(long)]
        request: Option<i64>,
    },
    /// Reject the application's open sync request (or --request ID).
    Reject {
        name: String,
        #[arg(long)]
        request: Option<i64>,
        #[arg(long)]
        reason: String,
    },
    /// Roll back to a known-good revision and pin it there.
    Rollback {
        name: String,
        /// A known-good revision (full or short SHA; see `tidemark app get`).
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: String,
    },
    /// Remove a rollback's pin: the application follows Git again.
    Unpin { name: String },
    /// Wait until the application is synced and/or healthy.
    Wait {
        name: String,
        /// Until the live state matches the target (sync status Synced).
        #[arg(long)]
        synced: bool,
        /// Until health is Healthy (Degraded once synced exits 3 at once).
        #[arg(long)]
        healthy: bool,
        /// Until this commit (full or short SHA) is the deployed revision.
        #[arg(long)]
        revision: Option<String>,
        /// How long to wait: `90s`, `5m`, `1h` or seconds.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// How often to ask.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
    },
}

/// `tidemark request …`
#[derive(Debug, Clone, Subcommand)]
pub enum RequestCommand {
    /// Sync requests, newest first.
    List {
        /// Only this application's.
        #[arg(long)]
        app: Option<String>,
        /// pending, approved, rejected, superseded, synced, failed…
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `tidemark audit list|export` and `verify --remote`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditRemoteCommand {
    /// Ledger rows, newest first.
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        app: Option<String>,
        /// RFC 3339 time or milliseconds since the epoch.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Every row (all pages) as JSON lines or CSV on standard output, oldest last.
    Export {
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
    /// Ask the server to verify the hash chain (exit 1 naming the first bad row); shown as
    /// `tidemark audit verify --remote`.
    #[command(skip)]
    Verify,
}

/// Why a client command failed; [`ClientError::exit_code`] is what the process exits with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The server's answer to a request that failed (its `message`).
    #[error("{message} (HTTP {status})")]
    Server { status: u16, message: String },
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    /// The documented exit code (see the module documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::TimedOut(_) => 2,
            ClientError::Unhealthy(_) => 3,
            ClientError::Server {
                status: 401 | 403 | 409,
                ..
            } => 4,
            ClientError::Usage(_) => 64,
            _ => 1,
        }
    }
}

/// Parses `90s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unit must be ms, s, m or h")),
    }
}

/// A REST client for one server and token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Errors: [`ClientError::Usage`] without a server URL.
    pub fn new(remote: &Remote) -> Result<Self, ClientError> {
        let base = remote
            .server
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ClientError::Usage("no server: give --server URL or set TIDEMARK_SERVER".into())
            })?;
        let parsed = url::Url::parse(&base)
            .map_err(|e| ClientError::Usage(format!("--server `{base}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!(
                "--server `{base}` must be an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("tidemark-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Failed(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: remote.token.clone().filter(|t| !t.is_empty()),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.base.clone(),
            message: error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    t.chars().take(500).collect()
                }
            });
        Err(ClientError::Server {
            status: status.as_u16(),
            message,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` (with `query`), the JSON answer.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let resp = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        json_of(resp).await
    }

    /// `GET path` (with `query`), the answer as text (CSV, JSON lines) and `X-Next-Cursor`.
    pub async fn get_text(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(String, Option<String>), ClientError> {
        let resp = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        let next = resp
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Failed(e.to_string()))?;
        Ok((text, next))
    }

    /// `POST path` with a JSON `body`, the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        let resp = self
            .send(self.http.post(self.url(path)).json(&body))
            .await?;
        json_of(resp).await
    }
}

async fn json_of(resp: reqwest::Response) -> Result<Value, ClientError> {
    let text = resp
        .text()
        .await
        .map_err(|e| ClientError::Failed(e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Failed(format!("the server's answer is not JSON: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A path segment, percent-encoded (application names are DNS labels, but never trust that).
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) => s[..7].into(),
        _ => text(v),
    }
}

fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| text(v))
}

/// Prints `value` in the chosen format; `table` gives the table form.
fn print(
    output: Output,
    value: &Value,
    table: impl FnOnce(&Value) -> Vec<Vec<String>>,
) -> Result<(), ClientError> {
    match output {
        Output::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string(value)
                .map_err(|e| ClientError::Failed(format!("YAML: {e}")))?;
            print!("{text}");
        }
        Output::Table => {
            let rows = table(value);
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::NOTHING);
            t.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
            let mut rows = rows.into_iter();
            if let Some(header) = rows.next() {
                t.set_header(header);
            }
            for r in rows {
                t.add_row(r);
            }
            // comfy-table pads each cell with one space on both sides; kubectl-like output
            // starts at the margin.
            for line in t.to_string().lines() {
                println!("{}", line.strip_prefix(' ').unwrap_or(line).trim_end());
            }
        }
    }
    Ok(())
}

fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .map_or(&[], Vec::as_slice)
}

/// Runs `tidemark app …`.
///
/// Errors: [`ClientError`], each with its exit code.
pub async fn app(remote: &Remote, command: AppCommand) -> Result<(), ClientError> {
    let c = Client::new(remote)?;
    let out = remote.output;
    match command {
        AppCommand::List => {
            let v = c.get("/api/v1/applications", &[]).await?;
            print(out, &v, |v| {
                let mut rows = vec![row(&[
                    "NAME", "PROJECT", "SYNC", "HEALTH", "TARGET", "POLICY", "SOURCE",
                ])];
                for a in items(v) {
                    rows.push(vec![
                        text(&a["name"]),
                        text(&a["project"]),
                        text(&a["sync_status"]),
                        text(&a["health"]),
                        short(&a["target_sha"]),
                        text(&a["sync_policy"]),
                        text(&a["source"]),
                    ]);
                }
                rows
            })
        }
        AppCommand::Get { name } => {
            let v = c
                .get(&format!("/api/v1/applications/{}", seg(&name)), &[])
                .await?;
            print(out, &v, |v| {
                let a = &v["application"];
                let s = &v["status"];
                let mut rows = vec![row(&["FIELD", "VALUE"])];
                for (k, val) in [
                    ("name", text(&a["name"])),
                    ("project", text(&a["project"])),
                    ("source", text(&a["source"])),
                    ("revision", text(&a["target_revision"])),
                    (
                        "destination",
                        format!("{} / {}", text(&a["cluster"]), text(&a["namespace"])),
                    ),
                    ("sync policy", text(&a["sync_policy"])),
                    ("sync status", text(&s["sync_status"])),
                    ("health", text(&s["health"])),
                    ("health message", text(&s["health_message"])),
                    ("target", short(&s["target_revision"])),
                    ("deployed", short(&s["deployed_revision"])),
                    (
                        "pinned",
                        v["pinned"]["revision"]
                            .as_str()
                            .map_or("no".into(), |r| format!("at {}", short(&json!(r)))),
                    ),
                    ("held back", text(&v["held_back"])),
                    ("declared by", text(&v["declared_by"])),
                    ("git error", text(&a["git_error"])),
                ] {
                    rows.push(vec![k.to_owned(), val]);
                }
                rows
            })
        }
        AppCommand::Diff { name, from, to } => {
            let mut q = Vec::new();
            if let (Some(f), Some(t)) = (from, to) {
                q.push(("from", f));
                q.push(("to", t));
            }
            let v = c
                .get(&format!("/api/v1/applications/{}/diff", seg(&name)), &q)
                .await?;
            print(out, &v, diff_rows)
        }
        AppCommand::History { name, limit } => {
            let v = c
                .get(
                    &format!("/api/v1/applications/{}/timeline", seg(&name)),
                    &[("limit", limit.min(500).to_string())],
                )
                .await?;
            print(out, &v, |v| {
                let mut rows = vec![row(&["TIME", "KIND", "MESSAGE"])];
                for e in items(v) {
                    rows.push(vec![
                        when(&e["occurred_at"]),
                        text(&e["kind"]),
                        text(&e["message"]),
                    ]);
                }
                rows
            })
        }
        AppCommand::Sync { name, dry_run } => {
            let v = c
                .post(
                    &format!("/api/v1/applications/{}/sync", seg(&name)),
                    json!({"dry_run": dry_run}),
                )
                .await?;
            print(out, &v, |v| {
                if v["dry_run"] == json!(true) {
                    return diff_rows(v);
                }
                let mut rows = vec![row(&["OBJECT", "RESULT", "MESSAGE"])];
                for r in v["results"].as_array().map_or(&[][..], Vec::as_slice) {
                    rows.push(vec![
                        text(&r["object"]),
                        text(&r["action"]),
                        text(&r["message"]),
                    ]);
                }
                rows
            })?;
            let status = v["status"].as_str().unwrap_or_default();
            if !dry_run && status != "succeeded" {
                return Err(ClientError::Unhealthy(format!(
                    "sync #{} of {name} {status}",
                    text(&v["sync"])
                )));
            }
            Ok(())
        }
        AppCommand::Refresh { name } => {
            let v = c
                .post(
                    &format!("/api/v1/applications/{}/refresh", seg(&name)),
                    json!({}),
                )
                .await?;
            print(out, &v, |v| {
                vec![
                    row(&["STATUS", "REPOSITORY"]),
                    vec![text(&v["status"]), text(&v["repository"])],
                ]
            })
        }
        AppCommand::Approve { name, request } => {
            let id = open_request(&c, &name, request).await?;
            let v = c
                .post(&format!("/api/v1/sync-requests/{id}/approve"), json!({}))
                .await?;
            print(out, &v, request_rows)
        }
        AppCommand::Reject {
            name,
            request,
            reason,
        } => {
            let id = open_request(&c, &name, request).await?;
            let v = c
                .post(
                    &format!("/api/v1/sync-requests/{id}/reject"),
                    json!({"reason": reason}),
                )
                .await?;
            print(out, &v, request_rows)
        }
        AppCommand::Rollback { name, to, reason } => {
            let v = c
                .post(
                    &format!("/api/v1/applications/{}/rollback", seg(&name)),
                    json!({"revision": to, "reason": reason}),
                )
                .await?;
            print(out, &v, |v| {
                vec![
                    row(&["APPLICATION", "RESULT"]),
                    vec![name.clone(), compact(v)],
                ]
            })
        }
        AppCommand::Unpin { name } => {
            let v = c
                .post(
                    &format!("/api/v1/applications/{}/unpin", seg(&name)),
                    json!({}),
                )
                .await?;
            print(out, &v, |v| {
                vec![
                    row(&["APPLICATION", "RESULT"]),
                    vec![name.clone(), compact(v)],
                ]
            })
        }
        AppCommand::Wait {
            name,
            synced,
            healthy,
            revision,
            timeout,
            interval,
        } => {
            wait(
                &c,
                out,
                &name,
                (synced, healthy, revision),
                timeout,
                interval,
            )
            .await
        }
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| (*s).to_owned()).collect()
}

fn compact(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "done".into(),
        Value::Null => "done".into(),
        other => other.to_string(),
    }
}

fn diff_rows(v: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![row(&["KIND", "NAMESPACE", "NAME", "STATUS", "CHANGES"])];
    let resources = v["resources"].as_array().map_or(&[][..], Vec::as_slice);
    for r in resources {
        let changes = r["changes"].as_array().map_or(0, Vec::len);
        let o = &r["object"];
        rows.push(vec![
            text(&o["kind"]),
            text(&o["namespace"]),
            text(&o["name"]),
            text(&r["status"]),
            changes.to_string(),
        ]);
    }
    rows
}

fn request_rows(v: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![row(&[
        "ID",
        "APPLICATION",
        "REVISION",
        "STATUS",
        "APPROVALS",
        "REQUESTED",
    ])];
    let list: Vec<&Value> = if v.get("items").is_some() {
        items(v).iter().collect()
    } else if v.get("request").is_some() {
        vec![&v["request"]]
    } else {
        vec![v]
    };
    for r in list {
        let approvals = r["approvals"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["void"] != json!(true)).count());
        rows.push(vec![
            text(&r["id"]),
            text(&r["application"]),
            short(&r["revision"]),
            text(&r["status"]),
            format!("{approvals}/{}", text(&r["required"])),
            when(&r["created_at"]),
        ]);
    }
    rows
}

/// The id of `app`'s open (pending) sync request, or `explicit`.
async fn open_request(c: &Client, app: &str, explicit: Option<i64>) -> Result<i64, ClientError> {
    if let Some(id) = explicit {
        return Ok(id);
    }
    let v = c
        .get(
            "/api/v1/sync-requests",
            &[
                ("application", app.to_owned()),
                ("status", "pending".into()),
                ("limit", "1".into()),
            ],
        )
        .await?;
    items(&v)
        .first()
        .and_then(|r| r["id"].as_i64())
        .ok_or_else(|| ClientError::Server {
            status: 404,
            message: format!("application {app} has no pending sync request"),
        })
}

/// Polls the application until the conditions hold, it is Degraded once synced (with
/// `--healthy`), or `timeout` passes.
async fn wait(
    c: &Client,
    out: Output,
    name: &str,
    (synced, healthy, revision): (bool, bool, Option<String>),
    timeout: Duration,
    interval: Duration,
) -> Result<(), ClientError> {
    let (synced, healthy) = if !synced && !healthy && revision.is_none() {
        (true, true)
    } else {
        (synced, healthy)
    };
    let started = Instant::now();
    let path = format!("/api/v1/applications/{}", seg(name));
    loop {
        let v = c.get(&path, &[]).await?;
        let s = &v["status"];
        let sync_status = s["sync_status"].as_str().unwrap_or("Unknown");
        let health = s["health"].as_str().unwrap_or("Unknown");
        let deployed = s["deployed_revision"].as_str().unwrap_or_default();
        let revision_ok = revision
            .as_deref()
            .is_none_or(|r| !r.is_empty() && !deployed.is_empty() && deployed.starts_with(r));
        let synced_ok = !synced || sync_status == "Synced";
        let state = format!(
            "{name}: sync {sync_status}, health {health}, deployed {}",
            short(&s["deployed_revision"])
        );
        if synced_ok && revision_ok && (!healthy || health == "Healthy") {
            return print(out, &v, |_| {
                vec![
                    row(&["APPLICATION", "SYNC", "HEALTH", "DEPLOYED"]),
                    vec![
                        name.to_owned(),
                        sync_status.to_owned(),
                        health.to_owned(),
                        short(&s["deployed_revision"]),
                    ],
                ]
            });
        }
        if healthy && synced_ok && revision_ok && health == "Degraded" {
            let why = s["health_message"].as_str().unwrap_or_default();
            return Err(ClientError::Unhealthy(format!("{state}: {why}")));
        }
        if started.elapsed() + interval > timeout {
            return Err(ClientError::TimedOut(format!(
                "timed out after {}s waiting for {name} ({state})",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs `tidemark request …`.
///
/// Errors: [`ClientError`].
pub async fn request(remote: &Remote, command: RequestCommand) -> Result<(), ClientError> {
    let c = Client::new(remote)?;
    match command {
        RequestCommand::List { app, status, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(a) = app {
                q.push(("application", a));
            }
            if let Some(s) = status {
                q.push(("status", s));
            }
            let v = c.get("/api/v1/sync-requests", &q).await?;
            print(remote.output, &v, request_rows)
        }
    }
}

/// Runs `tidemark audit list|export|verify --remote`.
///
/// Errors: [`ClientError`]; a broken chain is [`ClientError::Failed`] naming the row.
pub async fn audit(remote: &Remote, command: AuditRemoteCommand) -> Result<(), ClientError> {
    let c = Client::new(remote)?;
    match command {
        AuditRemoteCommand::List {
            actor,
            action,
            app,
            since,
            until,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("actor", actor),
                ("action", action),
                ("application", app),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let v = c.get("/api/v1/audit", &q).await?;
            print(remote.output, &v, |v| {
                let mut rows = vec![row(&[
                    "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME",
                ])];
                for r in items(v) {
                    rows.push(vec![
                        text(&r["seq"]),
                        when(&r["at"]),
                        text(&r["actor_name"]),
                        text(&r["action"]),
                        text(&r["target"]),
                        text(&r["outcome"]),
                    ]);
                }
                rows
            })
        }
        AuditRemoteCommand::Export {
            format,
            since,
            until,
        } => {
            let mut cursor: Option<String> = None;
            let mut first = true;
            loop {
                let mut q = vec![("format", format.clone()), ("limit", "500".into())];
                if let Some(s) = &since {
                    q.push(("since", s.clone()));
                }
                if let Some(u) = &until {
                    q.push(("until", u.clone()));
                }
                if let Some(cur) = &cursor {
                    q.push(("cursor", cur.clone()));
                }
                let (body, next) = c.get_text("/api/v1/audit", &q).await?;
                // CSV pages each start with the header line; print it once.
                let body = if format == "csv" && !first {
                    body.split_once('\n')
                        .map_or("", |(_, rest)| rest)
                        .to_owned()
                } else {
                    body
                };
                print!("{body}");
                first = false;
                match next {
                    Some(n) if Some(&n) != cursor.as_ref() => cursor = Some(n),
                    _ => break,
                }
            }
            Ok(())
        }
        AuditRemoteCommand::Verify => {
            let v = c.get("/api/v1/audit/verify", &[]).await?;
            print(remote.output, &v, |v| {
                vec![
                    row(&["VERIFIED THROUGH", "FIRST BAD", "PROBLEM"]),
                    vec![
                        text(&v["verified_through"]),
                        text(&v["first_bad"]),
                        text(&v["problem"]),
                    ],
                ]
            })?;
            match v["first_bad"].as_i64() {
                None => Ok(()),
                Some(bad) => Err(ClientError::Failed(format!(
                    "audit ledger broken at #{bad}: {}",
                    text(&v["problem"])
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let server = |status| ClientError::Server {
            status,
            message: String::new(),
        };
        assert_eq!(ClientError::TimedOut(String::new()).exit_code(), 2);
        assert_eq!(ClientError::Unhealthy(String::new()).exit_code(), 3);
        for s in [401, 403, 409] {
            assert_eq!(server(s).exit_code(), 4);
        }
        for s in [400, 404, 500, 503] {
            assert_eq!(server(s).exit_code(), 1);
        }
        assert_eq!(ClientError::Usage(String::new()).exit_code(), 64);
    }
}
