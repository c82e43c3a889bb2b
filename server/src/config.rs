//! Typed settings: `tidemark.toml` (optional) overlaid by `TIDEMARK__SECTION__KEY` environment
//! variables. Unknown keys are rejected with their full path; secrets never appear in `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use app::model::SyncPolicy;
use serde::Deserialize;

/// Prefix of environment variables that override the file, e.g. `TIDEMARK__DATABASE__URL`.
pub const ENV_PREFIX: &str = "TIDEMARK__";

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {var} does not name a setting")]
    BadEnvName { var: String },
}

/// Everything Tidemark can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub git: GitSettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    #[serde(default)]
    pub repositories: Vec<RepositorySettings>,
    #[serde(default)]
    pub clusters: Vec<ClusterSettings>,
    #[serde(default)]
    pub applications: Vec<ApplicationSettings>,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub notifications: NotificationSettings,
    #[serde(default)]
    pub secrets: SecretsSettings,
    /// Per-project policy (`[[projects]]`): signed-commit requirement, trusted keys and what
    /// Git may declare.
    #[serde(default)]
    pub projects: Vec<ProjectSettings>,
    /// Directory generators (`[[generators]]`): one application per directory of a repository
    /// matching a glob (see [`crate::git::generators`]).
    #[serde(default)]
    pub generators: Vec<GeneratorSettings>,
}

/// A directory generator (`[[generators]]`), Argo CD's ApplicationSet git directory generator:
/// every directory of `repository` at `revision` matching `path_glob` becomes an application
/// named after the directory, with the other fields from `template`. A directory that appears
/// creates one, a directory that goes retires it (its history stays).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSettings {
    /// The generator's name (audit actor `git:generator/NAME`).
    pub name: String,
    /// Project of every generated application; its bounds (`source_repositories`,
    /// `destinations`) decide what may be generated.
    #[serde(default = "default_project")]
    pub project: String,
    /// A `[[repositories]]` name (a Git repository).
    pub repository: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Slash-separated glob, one pattern per path component (`apps/*`, `envs/*/apps/*`).
    pub path_glob: String,
    /// Every other `[[applications]]` field (`cluster`, `namespace`, `sync_policy`,
    /// `[template.helm]`…). In strings, `{{name}}` is the directory's name and `{{path}}` its
    /// path.
    #[serde(default)]
    pub template: toml::Table,
}

/// Where a project's applications may be deployed (`[[projects.destinations]]`, Argo CD's
/// AppProject destinations). `*` in a field matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationBound {
    /// A `[[clusters]]` name or pattern.
    pub cluster: String,
    /// A namespace name or pattern.
    pub namespace: String,
}

/// What one project requires of every application in it (`[[projects]]`). Projects without an
/// entry require nothing beyond their applications' own settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    pub name: String,
    /// Only revisions signed by a trusted key are synced, in every application of the project.
    #[serde(default)]
    pub require_signed: bool,
    /// Keys trusted for the project's applications, on top of their repository's
    /// `trusted_keys` (same forms).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Repositories (names or `*` patterns) that applications declared in Git (app of apps,
    /// generators) may read from; empty: Git may declare no application in this project.
    #[serde(default)]
    pub source_repositories: Vec<String>,
    /// Clusters and namespaces applications declared in Git may deploy to; empty: none.
    #[serde(default)]
    pub destinations: Vec<DestinationBound>,
    /// Cluster-scoped kinds (Namespace, ClusterRole, CustomResourceDefinition…) applications
    /// declared in Git may sync (Argo CD's `clusterResourceWhitelist`); empty: none.
    #[serde(default)]
    pub cluster_resources: Vec<ResourceKindBound>,
}

impl ProjectSettings {
    /// What every object of an application declared in Git in this project is held to.
    pub fn declared_bounds(&self) -> DeclaredBounds {
        DeclaredBounds {
            destinations: self.destinations.clone(),
            cluster_resources: self.cluster_resources.clone(),
        }
    }
}

impl DeclaredBounds {
    /// Whether an application on `cluster` may sync `obj` (placed: namespaced objects carry
    /// their namespace, cluster-scoped ones none). A namespaced object's namespace must be
    /// among the destinations on `cluster`; a cluster-scoped kind among `cluster_resources` —
    /// and a Namespace's name among the destinations too (a namespace the application could not
    /// deploy into is not its to make).
    ///
    /// Errors: why not, naming the object and the project setting that refuses it.
    pub fn admits(&self, cluster: &str, obj: &serde_json::Value) -> Result<(), String> {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let group = obj["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .rsplit_once('/')
            .map_or("", |(g, _)| g);
        let matches = |pattern: &str, value: &str| {
            glob::Pattern::new(pattern).is_ok_and(|p| p.matches(value))
        };
        let destination = |namespace: &str| {
            self.destinations
                .iter()
                .any(|d| matches(&d.cluster, cluster) && matches(&d.namespace, namespace))
        };
        match obj["metadata"]["namespace"].as_str() {
            Some(namespace) if !destination(namespace) => Err(format!(
                "{kind} {namespace}/{name}: namespace `{namespace}` on cluster `{cluster}` is not among the project's destinations"
            )),
            Some(_) => Ok(()),
            None if !self
                .cluster_resources
                .iter()
                .any(|r| matches(&r.group, group) && matches(&r.kind, kind)) =>
            {
                Err(format!(
                    "{kind} {name}: cluster-scoped kind `{kind}` (group `{group}`) is not among the project's cluster_resources"
                ))
            }
            None if kind == "Namespace" && group.is_empty() && !destination(name) => Err(format!(
                "Namespace {name}: `{name}` on cluster `{cluster}` is not among the project's destinations"
            )),
            None => Ok(()),
        }
    }
}

/// A cluster-scoped kind a project's Git-declared applications may sync
/// (`[[projects.cluster_resources]]`). `group` is the API group (`""` for the core API, e.g.
/// Namespace); `*` in a field matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceKindBound {
    pub group: String,
    pub kind: String,
}

/// A project's bounds on the objects its Git-declared applications sync, checked before any is
/// applied (stored as JSON in `project_policies.declared_bounds`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct DeclaredBounds {
    /// Where namespaced objects may go (`cluster`, `namespace` patterns).
    pub destinations: Vec<DestinationBound>,
    /// Which cluster-scoped kinds may be synced at all.
    pub cluster_resources: Vec<ResourceKindBound>,
}

/// Encryption at rest of the Secret data in stored renders (see [`crate::secrets`]). Without a
/// key, Secret values are stored in plaintext and a warning is logged at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// Id of the active key: new writes use it and store it with each value (letters, digits,
    /// `-`, `_`, `.`; start with a letter so `TIDEMARK__SECRETS__KEY_ID` stays a string).
    pub key_id: String,
    /// The active key, 32 bytes in standard base64 (`TIDEMARK__SECRETS__KEY`), or
    pub key: Option<Secret>,
    /// a file holding it (a Kubernetes Secret volume).
    pub key_file: Option<PathBuf>,
    /// Older keys by id, kept only to decrypt what they sealed
    /// (`TIDEMARK__SECRETS__PREVIOUS_KEYS__<ID>`; ids from the environment are lowercased).
    pub previous_keys: BTreeMap<String, Secret>,
    /// Older keys by id, each in its own file.
    pub previous_key_files: BTreeMap<String, PathBuf>,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            key_id: "k1".into(),
            key: None,
            key_file: None,
            previous_keys: BTreeMap::new(),
            previous_key_files: BTreeMap::new(),
        }
    }
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where notifications go ([`NotificationTarget`]), who gets which ([`Subscription`]) and the
/// time-based triggers' thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    pub targets: Vec<NotificationTarget>,
    pub subscriptions: Vec<Subscription>,
    /// `drift_stale` fires once per drift episode still open after this long (`90s`, `30m`, `2h`).
    pub drift_stale_after: String,
    /// `pinned_long` fires once per pin older than this.
    pub pinned_after: String,
    /// A delivery is given up (shown as failed) after this many attempts.
    pub max_attempts: u32,
    /// First retry delay; each further retry waits twice as long, at most `retry_max`.
    pub retry_initial: String,
    pub retry_max: String,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            subscriptions: Vec::new(),
            drift_stale_after: "30m".into(),
            pinned_after: "24h".into(),
            max_attempts: 10,
            retry_initial: "2s".into(),
            retry_max: "10m".into(),
        }
    }
}

impl NotificationSettings {
    /// The thresholds and backoff as durations (validated at load).
    pub fn durations(&self) -> NotificationTimes {
        let d = |s: &str| parse_duration(s).unwrap_or(std::time::Duration::from_secs(60));
        NotificationTimes {
            drift_stale_after: d(&self.drift_stale_after),
            pinned_after: d(&self.pinned_after),
            retry_initial: d(&self.retry_initial),
            retry_max: d(&self.retry_max),
        }
    }
}

/// [`NotificationSettings`]' durations, parsed.
#[derive(Debug, Clone, Copy)]
pub struct NotificationTimes {
    pub drift_stale_after: std::time::Duration,
    pub pinned_after: std::time::Duration,
    pub retry_initial: std::time::Duration,
    pub retry_max: std::time::Duration,
}

/// `90s`, `30m`, `24h`, `2d` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// How a target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// JSON POST, optionally signed (`X-Tidemark-Signature: sha256=HMAC(secret, body)`).
    Webhook,
    /// Slack incoming webhook (also Mattermost and Rocket.Chat).
    Slack,
    /// E-mail over SMTP.
    Email,
}

/// One place notifications are sent to. Secrets come from the environment or a file (a
/// Kubernetes Secret volume), never from the file itself: `*_env` names a variable, `*_file` a path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationTarget {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TargetKind,
    /// Webhook and Slack: the URL (or `url_env` / `url_file`: Slack URLs are credentials).
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    /// Webhook: the HMAC-SHA256 key.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// E-mail: the SMTP server, STARTTLS (default on; off only for a local relay) and login.
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    #[serde(default = "default_true")]
    pub starttls: bool,
    /// A PEM CA certificate to trust besides the system's (a private mail relay).
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Which events go to a target: everything of the listed projects and applications (both empty:
/// every application) whose trigger is listed (default: all but `sync_succeeded`, which is opt-in).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub target: String,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub applications: Vec<String>,
    pub triggers: Option<Vec<crate::notify::Trigger>>,
}

/// Sign-in, sessions, throttling and role bindings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Offer the local username/password form (the bootstrap `admin` and other local accounts).
    pub local_login: bool,
    /// The bootstrap admin's password (`TIDEMARK__AUTH__ADMIN_PASSWORD`); when unset, one is
    /// generated at first start and printed once.
    pub admin_password: Option<Secret>,
    /// Single sign-on through an OpenID Connect provider.
    pub oidc: Option<OidcSettings>,
    /// Who gets which role, by OIDC group or user name, optionally within one project.
    pub bindings: Vec<RoleBinding>,
    /// Role of a signed-in person no binding matches (none by default: they see a 403 page).
    pub default_role: Option<app::model::Role>,
    /// Role needed to read pod logs (`viewer`, `deployer` or `admin`; default `deployer`): logs
    /// often hold what manifests do not (request bodies, tokens printed by mistake).
    pub logs_role: app::model::Role,
    /// Sign out after this long without a request (minutes).
    pub session_idle_minutes: u64,
    /// Sign out this long after sign-in whatever happens (minutes).
    pub session_absolute_minutes: u64,
    /// Failed sign-ins allowed per user name within the window before it is locked.
    pub max_failures_per_user: u32,
    /// Failed sign-ins allowed per client address within the window.
    pub max_failures_per_ip: u32,
    pub failure_window_minutes: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            local_login: true,
            admin_password: None,
            oidc: None,
            bindings: Vec::new(),
            default_role: None,
            logs_role: app::model::Role::Deployer,
            session_idle_minutes: 8 * 60,
            session_absolute_minutes: 24 * 60,
            max_failures_per_user: 5,
            max_failures_per_ip: 20,
            failure_window_minutes: 15,
        }
    }
}

/// An OpenID Connect provider (Dex, Keycloak, Okta, Entra ID, Google, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer; `{issuer_url}/.well-known/openid-configuration` must answer.
    pub issuer_url: String,
    pub client_id: String,
    /// The client secret (`TIDEMARK__AUTH__OIDC__CLIENT_SECRET`), or
    pub client_secret: Option<Secret>,
    /// a file holding it (Kubernetes Secret volume).
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID-token claim holding the person's groups (a list of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// ID-token claim used as the user name (falls back to `email`, then `sub`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Label of the sign-in button.
    #[serde(default = "default_sso_label")]
    pub display_name: String,
    /// Accepted ID-token signature algorithms (asymmetric only).
    #[serde(default = "default_algs")]
    pub allowed_algs: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_sso_label() -> String {
    "Single sign-on".into()
}
fn default_algs() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ]
    .map(String::from)
    .to_vec()
}

/// `group` or `user` gets `role`, everywhere or only in `project`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    pub group: Option<String>,
    pub user: Option<String>,
    pub role: app::model::Role,
    pub project: Option<String>,
}

/// The HTTP listener and the site's static files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The URL people use to reach Tidemark (links, cookies, Origin checks).
    pub public_url: Option<String>,
    /// Directory holding the compiled site (`pkg/`, CSS, assets) made by `cargo leptos build`.
    pub site_root: PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            public_url: None,
            site_root: PathBuf::from("target/site"),
        }
    }
}

/// Where Tidemark keeps its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded, created if missing) or `postgres://…`.
    pub url: DatabaseUrl,
    pub max_connections: u32,
    /// How long start-up waits for the database before giving up.
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://data/tidemark.db".into()),
            max_connections: 8,
            connect_timeout_secs: 5,
        }
    }
}

/// A database URL; its password is masked whenever it is displayed or debug-printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                f.write_str(u.as_str())
            }
            Ok(_) => f.write_str(&self.0),
            Err(_) => f.write_str("<unparseable database url>"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// How often applications are compared with their clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Seconds between comparisons of each application (±10 % jitter). A new revision, a
    /// change to one of the application's objects, a webhook or a click compares it at once.
    pub interval_secs: u64,
    /// Applications reconciled at the same time by one replica (workers of the work queue).
    pub concurrency: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            concurrency: 4,
        }
    }
}

/// Git mirrors, rendering limits and webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitSettings {
    /// Where bare mirrors are kept.
    pub cache_dir: PathBuf,
    /// Largest manifest file a render reads.
    pub max_file_bytes: u64,
    /// Most manifest files under one application path.
    pub max_files: usize,
    /// Largest total input and output of one render.
    pub max_total_bytes: u64,
    /// `kubectl` (runs `kubectl kustomize`) or a `kustomize` binary (runs `kustomize build`).
    pub kustomize_command: String,
    pub kustomize_timeout_secs: u64,
    /// How Kustomize renders are isolated: `bwrap` (default: a bubblewrap sandbox holding only
    /// the checkout and the binary, no network) or `none` (unsafe: a repository can make
    /// Kustomize read the host's files and fetch remote bases; for hosts without user
    /// namespaces only, and logged as a warning at start).
    pub kustomize_sandbox: crate::render::Sandbox,
    /// Accepted webhooks per repository per minute (more answer 429).
    pub webhook_rate_per_minute: u32,
    /// Longest one signature check (`gpgv` or `ssh-keygen -Y`) may take.
    pub signature_timeout_secs: u64,
    /// The Helm 4 binary: `helm` on `PATH` (default) or a path.
    pub helm_command: String,
    /// Longest one `helm template`, dependency fetch or chart download may take.
    pub helm_timeout_secs: u64,
}

impl Default for GitSettings {
    fn default() -> Self {
        let limits = crate::render::Limits::default();
        Self {
            cache_dir: PathBuf::from("data/git"),
            max_file_bytes: limits.max_file_bytes,
            max_files: limits.max_files,
            max_total_bytes: limits.max_total_bytes,
            kustomize_command: limits.kustomize_command,
            kustomize_timeout_secs: limits.kustomize_timeout.as_secs(),
            kustomize_sandbox: limits.kustomize_sandbox,
            webhook_rate_per_minute: 30,
            signature_timeout_secs: 10,
            helm_command: limits.helm_command,
            helm_timeout_secs: limits.helm_timeout.as_secs(),
        }
    }
}

impl GitSettings {
    /// The render limits these settings describe.
    pub fn limits(&self) -> crate::render::Limits {
        crate::render::Limits {
            max_file_bytes: self.max_file_bytes,
            max_files: self.max_files,
            max_total_bytes: self.max_total_bytes,
            kustomize_timeout: std::time::Duration::from_secs(self.kustomize_timeout_secs),
            kustomize_command: self.kustomize_command.clone(),
            kustomize_sandbox: self.kustomize_sandbox,
            helm_command: self.helm_command.clone(),
            helm_timeout: std::time::Duration::from_secs(self.helm_timeout_secs),
            helm_dependency_cache: Some(self.cache_dir.join("helm-dependencies")),
            helm_repositories: Vec::new(),
        }
    }
}

/// A Git repository applications are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySettings {
    pub name: String,
    /// `https://…`, `ssh://…` / `git@host:path`, `file://…` or a local path.
    pub url: String,
    /// User for HTTPS basic auth or SSH (default: from the URL, else `git`).
    pub username: Option<String>,
    /// Environment variable holding the HTTPS password or token (or the SSH key passphrase).
    pub password_env: Option<String>,
    /// File holding the HTTPS password or token (or the SSH key passphrase).
    pub password_file: Option<PathBuf>,
    /// Private key for SSH remotes.
    pub ssh_key_file: Option<PathBuf>,
    /// Seconds between polls of the remote (a webhook or refresh fetches at once).
    #[serde(default = "default_fetch_interval")]
    pub fetch_interval_secs: u64,
    /// Environment variable holding the webhook secret (HMAC key or GitLab token).
    pub webhook_secret_env: Option<String>,
    /// File holding the webhook secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// Keys whose signatures make a commit (or signed tag) `verified`: each entry a file path
    /// (an armored or binary OpenPGP public key export, or an SSH `allowed_signers` file) or the
    /// same material inline (`"alice@example.com ssh-ed25519 AAAA…"`).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// `git` (default) or `helm`: a chart repository (`https://…` serving `index.yaml`, or
    /// `oci://registry/path`), polled for new chart versions on `fetch_interval_secs`.
    #[serde(default, rename = "type")]
    pub kind: RepositoryKind,
    /// For a chart repository: the chart this entry follows (set when an application names it
    /// with `helm.chart`; one entry per chart, so each chart has its own version history).
    #[serde(default)]
    pub chart: Option<String>,
    /// An `oci://` registry served over plain HTTP (Helm's `--plain-http`; a registry on the
    /// same host or network without TLS). Default: HTTPS.
    #[serde(default)]
    pub plain_http: bool,
}

/// What a `[[repositories]]` entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryKind {
    /// A Git repository (mirrored with git2).
    #[default]
    Git,
    /// A Helm chart repository (HTTP(S) `index.yaml` or OCI registry), read with `helm`.
    Helm,
}

fn default_fetch_interval() -> u64 {
    60
}

impl RepositorySettings {
    /// A repository with defaults for everything but its name and URL.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            username: None,
            password_env: None,
            password_file: None,
            ssh_key_file: None,
            fetch_interval_secs: default_fetch_interval(),
            webhook_secret_env: None,
            webhook_secret_file: None,
            trusted_keys: Vec::new(),
            kind: RepositoryKind::Git,
            chart: None,
            plain_http: false,
        }
    }

    /// The credentials the Git layer uses (secrets are read at fetch time).
    pub fn auth(&self) -> crate::git::Auth {
        crate::git::Auth {
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            ssh_key_file: self.ssh_key_file.clone(),
        }
    }

    /// The webhook secret, if one is configured and readable.
    pub fn webhook_secret(&self) -> Option<String> {
        if let Some(var) = &self.webhook_secret_env {
            return std::env::var(var).ok().filter(|s| !s.is_empty());
        }
        self.webhook_secret_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }
}

/// A Kubernetes cluster applications are deployed to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub name: String,
    /// API server URL without credentials (for example the sandbox's `http://127.0.0.1:6443`).
    #[serde(default)]
    pub url: String,
    /// A kubeconfig file (credentials, TLS); `context` picks one of its contexts.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Use the service account Tidemark runs under inside the cluster.
    #[serde(default)]
    pub in_cluster: bool,
}

/// An application: a path in a repository deployed to a cluster namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSettings {
    pub name: String,
    #[serde(default = "default_project")]
    pub project: String,
    /// A `[[repositories]]` name: a Git repository, or a chart repository (`type = "helm"`).
    /// May be left out for a chart named by `helm.repo_url`.
    #[serde(default)]
    pub repository: String,
    /// Path in the Git repository (default: its root); unused for a chart repository.
    #[serde(default)]
    pub path: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    pub cluster: String,
    pub namespace: String,
    #[serde(default = "default_policy")]
    pub sync_policy: SyncPolicy,
    /// With `auto`: re-apply Git when the live state drifts.
    #[serde(default)]
    pub self_heal: bool,
    /// Delete objects Tidemark applied earlier that left Git.
    #[serde(default)]
    pub prune: bool,
    /// Fields never compared: `[[applications.ignore]]` with optional `group`, `kind`, `name`
    /// and `json_pointers = ["/spec/replicas"]`.
    #[serde(default)]
    pub ignore: Vec<crate::diff::IgnoreRule>,
    /// With `manual`: who must approve a sync request (`[applications.approvals]`).
    #[serde(default)]
    pub approvals: ApprovalPolicy,
    /// How live objects are compared (`[applications.compare]`).
    #[serde(default)]
    pub compare: CompareOptions,
    /// Only revisions signed by a trusted key of the repository or project are synced (auto,
    /// request, approval, rollback); an unverified target waits, the deployed revision stays.
    #[serde(default)]
    pub require_signed: bool,
    /// How the path is rendered: `directory`, `kustomize` or `helm` (default: detected — a
    /// path holding `Chart.yaml` is a chart, one holding a kustomization is Kustomize).
    #[serde(default)]
    pub source: Option<crate::render::SourceType>,
    /// Helm options (`[applications.helm]`): release name, values, capabilities, and a chart
    /// from a chart repository (`chart`, `repo_url`, `version`).
    #[serde(
        default,
        skip_serializing_if = "crate::render::HelmOptions::is_default"
    )]
    pub helm: crate::render::HelmOptions,
}

/// Field managers whose changes to a live object are not drift by default: controllers that
/// own fields Git may also set — the HorizontalPodAutoscaler writes `spec.replicas` through the
/// scale subresource as `kube-controller-manager`; the ClusterRole aggregation controller fills
/// the `rules` of an aggregated ClusterRole that Git declares as `rules: []`.
pub const DEFAULT_IGNORED_MANAGERS: [&str; 2] = [
    "kube-controller-manager",
    "clusterrole-aggregation-controller",
];

/// How an application's live objects are compared with Git (`[applications.compare]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareOptions {
    /// More field managers whose fields are not drift (an operator or webhook that rewrites a
    /// field Git sets), on top of [`DEFAULT_IGNORED_MANAGERS`].
    pub ignore_managers: Vec<String>,
    /// Opt-in: every field manager's changes are drift, [`DEFAULT_IGNORED_MANAGERS`] included
    /// (only `ignore_managers` are still left out).
    pub drift_from_all_managers: bool,
}

impl CompareOptions {
    /// The field managers whose fields are not drift for this application.
    pub fn ignored_managers(&self) -> Vec<String> {
        let mut out: Vec<String> = if self.drift_from_all_managers {
            Vec::new()
        } else {
            DEFAULT_IGNORED_MANAGERS
                .iter()
                .map(|m| (*m).to_owned())
                .collect()
        };
        out.extend(self.ignore_managers.iter().cloned());
        out
    }
}

/// How a manual application's sync requests are approved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// Approvals needed (N of the deployers allowed).
    pub required: u32,
    /// OIDC groups whose members may approve (empty: any deployer of the project).
    pub groups: Vec<String>,
    /// Sync as soon as the last approval arrives (otherwise a deployer clicks "sync now").
    pub sync_on_approval: bool,
    /// Rollbacks need the same approvals too (default off: rollback is the emergency path).
    pub rollback: bool,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required: 1,
            groups: Vec::new(),
            sync_on_approval: true,
            rollback: false,
        }
    }
}

impl ApplicationSettings {
    /// Points an application that takes a chart from a chart repository at the repository
    /// entry of that chart: `helm.repo_url` (or a `type = "helm"` `repository` without a
    /// chart) with `helm.chart` names the entry `<chart>-<8 hex of the URL's SHA-256>` (or
    /// `<repository>-<chart>`), created from the declared one (its credentials and interval)
    /// when `may_add`. The chart version (`helm.version`, else `revision`, `*` when that is the
    /// default `main`) becomes the revision.
    ///
    /// Errors: `(field, message)` — a chart without a repository, a `repo_url` that is not
    /// `https://`, `http://` or `oci://`, a repository that is not a chart repository, or
    /// (without `may_add`) an entry that is not declared.
    pub fn resolve_chart_source(
        &mut self,
        repositories: &mut Vec<RepositorySettings>,
        may_add: bool,
    ) -> Result<(), (&'static str, String)> {
        let declared_helm = repositories
            .iter()
            .find(|r| r.name == self.repository)
            .filter(|r| r.kind == RepositoryKind::Helm)
            .cloned();
        let Some(chart) = self.helm.chart.clone() else {
            if let Some(r) = &declared_helm {
                if r.chart.is_none() {
                    return Err((
                        "helm.chart",
                        format!(
                            "repository `{}` is a chart repository: name the chart",
                            r.name
                        ),
                    ));
                }
                self.chart_version_as_revision();
            } else if self.helm.repo_url.is_some() || self.helm.version.is_some() {
                return Err((
                    "helm.chart",
                    "a chart from a chart repository needs `chart`".into(),
                ));
            }
            return Ok(());
        };
        if chart.is_empty() || super::render::check_component(&chart).is_err() {
            return Err(("helm.chart", format!("`{chart}` is not a chart name")));
        }
        let (base, name) = match (&self.helm.repo_url, &declared_helm) {
            (Some(url), _) => {
                if !(url.starts_with("https://")
                    || url.starts_with("http://")
                    || url.starts_with("oci://"))
                {
                    return Err((
                        "helm.repo_url",
                        format!("`{url}` must be an https://, http:// or oci:// URL"),
                    ));
                }
                let base = repositories
                    .iter()
                    .find(|r| r.kind == RepositoryKind::Helm && r.url.trim_end_matches('/') == url.trim_end_matches('/'))
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut r = RepositorySettings::new("", url.clone());
                        r.kind = RepositoryKind::Helm;
                        r
                    });
                let digest = crate::render::digest(url.trim_end_matches('/'));
                (base, format!("{chart}-{}", &digest[..8]))
            }
            (None, Some(r)) if r.chart.as_deref() == Some(chart.as_str()) => (r.clone(), r.name.clone()),
            (None, Some(r)) => (r.clone(), format!("{}-{chart}", r.name)),
            (None, None) => {
                return Err((
                    "repository",
                    format!(
                        "`helm.chart` needs `helm.repo_url` or a `repository` of `type = \"helm\"` (`{}` is not one)",
                        self.repository
                    ),
                ))
            }
        };
        match repositories.iter().find(|r| r.name == name) {
            Some(existing)
                if existing.kind == RepositoryKind::Helm
                    && existing.chart.as_deref() == Some(chart.as_str()) => {}
            Some(_) => {
                return Err((
                    "helm.chart",
                    format!("repository name `{name}` is taken by another repository"),
                ));
            }
            None if may_add => {
                let mut entry = base;
                entry.name = name.clone();
                entry.chart = Some(chart);
                entry.webhook_secret_env = None;
                entry.webhook_secret_file = None;
                repositories.push(entry);
            }
            None => {
                return Err((
                    "helm.chart",
                    format!("chart repository entry `{name}` is not declared: declare the application (or a `[[repositories]]` entry with `type = \"helm\"` and `chart`) in tidemark.toml"),
                ));
            }
        }
        self.repository = name;
        self.chart_version_as_revision();
        Ok(())
    }

    fn chart_version_as_revision(&mut self) {
        if let Some(v) = &self.helm.version {
            self.revision = v.clone();
        } else if self.revision == default_revision() {
            self.revision = "*".into();
        }
    }

    /// What one application must satisfy, given the declared repositories and clusters:
    /// `Err((field, message))` names the field at fault.
    pub fn check(
        &self,
        repositories: &[RepositorySettings],
        clusters: &[ClusterSettings],
    ) -> Result<(), (&'static str, String)> {
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns_label(&self.name) {
            return Err((
                "name",
                format!(
                    "`{}` must be lowercase letters, digits and `-` (at most 63)",
                    self.name
                ),
            ));
        }
        let Some(repository) = repositories.iter().find(|r| r.name == self.repository) else {
            return Err((
                "repository",
                format!("no repository named `{}` is declared", self.repository),
            ));
        };
        let chart_repository = repository.kind == RepositoryKind::Helm;
        if !clusters.iter().any(|c| c.name == self.cluster) {
            return Err((
                "cluster",
                format!("no cluster named `{}` is declared", self.cluster),
            ));
        }
        if self.path.starts_with('/') || self.path.split('/').any(|seg| seg == "..") {
            return Err((
                "path",
                format!(
                    "`{}` must be relative to the repository root, without `..`",
                    self.path
                ),
            ));
        }
        if chart_repository {
            if let Err(e) = crate::git::charts::VersionRange::parse(&self.revision) {
                return Err(("helm.version", e));
            }
            if !self.helm.values_files.is_empty() {
                return Err((
                    "helm.values_files",
                    "a chart from a chart repository takes inline `values`, `set` and `set_string`; values files need a chart in Git".into(),
                ));
            }
        } else if self.revision.trim().is_empty() || self.revision.contains(char::is_whitespace) {
            return Err(("revision", "must be a branch, tag or commit".into()));
        }
        if self
            .source
            .is_some_and(|s| s != crate::render::SourceType::Helm)
            && (chart_repository || !self.helm.is_empty())
        {
            return Err((
                "source",
                "Helm options need `source = \"helm\"` (or none: detected)".into(),
            ));
        }
        if let Some(r) = &self.helm.release_name {
            if !dns_label(r) || r.len() > 53 {
                return Err((
                    "helm.release_name",
                    format!("`{r}` must be lowercase letters, digits and `-` (at most 53)"),
                ));
            }
        }
        if let Some(ns) = &self.helm.namespace {
            if !dns_label(ns) {
                return Err((
                    "helm.namespace",
                    format!("`{ns}` is not a valid namespace name"),
                ));
            }
        }
        for (key, value) in [
            (
                "helm.kube_version",
                self.helm.kube_version.iter().collect::<Vec<_>>(),
            ),
            ("helm.api_versions", self.helm.api_versions.iter().collect()),
        ] {
            if let Some(bad) = value
                .iter()
                .find(|v| v.starts_with('-') || v.contains(char::is_whitespace) || v.contains(','))
            {
                return Err((key, format!("`{bad}` is not a version")));
            }
        }
        for (i, f) in self.helm.values_files.iter().enumerate() {
            if f.starts_with('/') || f.trim().is_empty() {
                return Err((
                    "helm.values_files",
                    format!("values file {i} `{f}` must be a path relative to the chart"),
                ));
            }
        }
        if !dns_label(&self.namespace) {
            return Err((
                "namespace",
                format!("`{}` is not a valid namespace name", self.namespace),
            ));
        }
        Ok(())
    }
}

fn default_project() -> String {
    "default".into()
}
fn default_revision() -> String {
    "main".into()
}
fn default_policy() -> SyncPolicy {
    SyncPolicy::Manual
}

impl Settings {
    /// Loads the file (when given) and overlays `TIDEMARK__…` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.message().to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        for (var, value) in overrides {
            overlay(&mut root, &var, &value)?;
        }
        let mut settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(root))
            .map_err(|e| ConfigError::Invalid {
                key: e.path().to_string(),
                message: e.inner().message().to_owned(),
            })?;
        for i in 0..settings.applications.len() {
            let mut app = settings.applications[i].clone();
            app.resolve_chart_source(&mut settings.repositories, true)
                .map_err(|(field, message)| ConfigError::Invalid {
                    key: format!("applications[{i}].{field}"),
                    message,
                })?;
            settings.applications[i] = app;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field checks serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        for (i, app) in self.applications.iter().enumerate() {
            if let Err((field, message)) = app.check(&self.repositories, &self.clusters) {
                return invalid(format!("applications[{i}].{field}"), message);
            }
        }
        if let Err((key, message)) = crate::git::generators::check_settings(self) {
            return invalid(key, message);
        }
        for (i, b) in self.auth.bindings.iter().enumerate() {
            if b.group.is_some() == b.user.is_some() {
                return invalid(
                    format!("auth.bindings[{i}]"),
                    "a binding names exactly one of group or user".into(),
                );
            }
        }
        if let Some(oidc) = &self.auth.oidc {
            if self.server.public_url.is_none() {
                return invalid(
                    "server.public_url".into(),
                    "single sign-on needs the URL people use to reach Tidemark (the callback is {public_url}/auth/oidc/callback)".into(),
                );
            }
            if url::Url::parse(&oidc.issuer_url).is_err() {
                return invalid(
                    "auth.oidc.issuer_url".into(),
                    format!("`{}` is not a URL", oidc.issuer_url),
                );
            }
            for (i, alg) in oidc.allowed_algs.iter().enumerate() {
                if !default_algs().contains(alg) {
                    return invalid(
                        format!("auth.oidc.allowed_algs[{i}]"),
                        format!("`{alg}` is not an accepted asymmetric algorithm (RS*, PS256, ES256, ES384, EdDSA)"),
                    );
                }
            }
        }
        if let Err((key, message)) = self.check_notifications() {
            return invalid(key, message);
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let ways = usize::from(!c.url.is_empty())
                + usize::from(c.kubeconfig.is_some())
                + usize::from(c.in_cluster);
            if ways != 1 {
                return invalid(
                    format!("clusters[{i}]"),
                    format!(
                        "cluster `{}` needs exactly one of url, kubeconfig or in_cluster = true",
                        c.name
                    ),
                );
            }
        }
        let names = [
            (
                "repositories",
                self.repositories
                    .iter()
                    .map(|r| &r.name)
                    .collect::<Vec<_>>(),
            ),
            ("clusters", self.clusters.iter().map(|c| &c.name).collect()),
            (
                "applications",
                self.applications.iter().map(|a| &a.name).collect(),
            ),
        ];
        for (section, list) in names {
            for (i, name) in list.iter().enumerate() {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return invalid(
                        format!("{section}[{i}].name"),
                        format!("`{name}` must be non-empty letters, digits and `-`"),
                    );
                }
                if list[..i].contains(name) {
                    return invalid(
                        format!("{section}[{i}].name"),
                        format!("`{name}` is declared twice"),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Settings {
    fn check_notifications(&self) -> Result<(), (String, String)> {
        let n = &self.notifications;
        for (key, value) in [
            ("drift_stale_after", &n.drift_stale_after),
            ("pinned_after", &n.pinned_after),
            ("retry_initial", &n.retry_initial),
            ("retry_max", &n.retry_max),
        ] {
            if parse_duration(value).is_none_or(|d| d.is_zero()) {
                return Err((
                    format!("notifications.{key}"),
                    format!("`{value}` is not a duration like 90s, 30m, 24h or 2d"),
                ));
            }
        }
        for (i, t) in n.targets.iter().enumerate() {
            let at = |field: &str| format!("notifications.targets[{i}]{field}");
            if t.name.is_empty() || n.targets[..i].iter().any(|o| o.name == t.name) {
                return Err((
                    at(".name"),
                    format!("`{}` must be non-empty and unique", t.name),
                ));
            }
            let urls = usize::from(t.url.is_some())
                + usize::from(t.url_env.is_some())
                + usize::from(t.url_file.is_some());
            match t.kind {
                TargetKind::Webhook | TargetKind::Slack => {
                    if urls != 1 {
                        return Err((
                            at(""),
                            format!(
                                "target `{}` needs exactly one of url, url_env or url_file",
                                t.name
                            ),
                        ));
                    }
                    if let Some(url) = &t.url {
                        if !url.starts_with("http://") && !url.starts_with("https://") {
                            return Err((at(".url"), format!("`{url}` is not an http(s) URL")));
                        }
                    }
                }
                TargetKind::Email => {
                    if t.smtp_host.is_none() || t.from.is_none() || t.to.is_empty() {
                        return Err((at(""), format!("e-mail target `{}` needs smtp_host, from and at least one address in to", t.name)));
                    }
                    if t.username.is_some() && t.password_env.is_none() && t.password_file.is_none()
                    {
                        return Err((
                            at(".username"),
                            "an SMTP login needs password_env or password_file".into(),
                        ));
                    }
                }
            }
        }
        for (i, s) in n.subscriptions.iter().enumerate() {
            if !n.targets.iter().any(|t| t.name == s.target) {
                return Err((
                    format!("notifications.subscriptions[{i}].target"),
                    format!("no notification target is named `{}`", s.target),
                ));
            }
        }
        Ok(())
    }
}

/// Sets `TIDEMARK__A__B=value` as `a.b = value` in the table. Scalars that read as TOML
/// integers, floats or booleans are typed; everything else stays a string.
fn overlay(root: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadEnvName {
        var: var.to_owned(),
    };
    let keys: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_lowercase)
        .collect();
    let (last, parents) = keys.split_last().ok_or_else(bad)?;
    if keys.iter().any(String::is_empty) {
        return Err(bad());
    }
    let mut table = root;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(bad)?;
    }
    table.insert(last.clone(), typed_scalar(value));
    Ok(())
}

fn typed_scalar(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    toml::Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object of a Git-declared application against its project's bounds: namespaced by
    /// destination, cluster-scoped by kind, a Namespace by both.
    #[test]
    fn declared_bounds_admit_objects_by_namespace_and_cluster_scoped_kind() {
        let bounds = DeclaredBounds {
            destinations: vec![DestinationBound {
                cluster: "prod-*".into(),
                namespace: "team-a-*".into(),
            }],
            cluster_resources: vec![ResourceKindBound {
                group: "".into(),
                kind: "Namespace".into(),
            }],
        };
        let obj = |api: &str, kind: &str, name: &str, ns: Option<&str>| {
            let mut o =
                serde_json::json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}});
            if let Some(ns) = ns {
                o["metadata"]["namespace"] = ns.into();
            }
            o
        };
        let deploy = obj("apps/v1", "Deployment", "web", Some("team-a-web"));
        assert_eq!(bounds.admits("prod-eu", &deploy), Ok(()));
        // Another cluster, another namespace: refused, saying which.
        let err = bounds.admits("staging", &deploy).unwrap_err();
        assert!(err.contains("cluster `staging`"), "{err}");
        let stray = obj("v1", "ConfigMap", "c", Some("kube-system"));
        let err = bounds.admits("prod-eu", &stray).unwrap_err();
        assert!(err.contains("namespace `kube-system`"), "{err}");
        // Cluster-scoped: only the listed kinds, and a Namespace only where it may deploy.
        let role = obj("rbac.authorization.k8s.io/v1", "ClusterRole", "admin", None);
        let err = bounds.admits("prod-eu", &role).unwrap_err();
        assert!(err.contains("cluster_resources"), "{err}");
        assert_eq!(
            bounds.admits("prod-eu", &obj("v1", "Namespace", "team-a-web", None)),
            Ok(())
        );
        let err = bounds
            .admits("prod-eu", &obj("v1", "Namespace", "kube-system", None))
            .unwrap_err();
        assert!(err.contains("destinations"), "{err}");
        // No bounds at all: nothing is admitted.
        assert!(DeclaredBounds::default()
            .admits("prod-eu", &deploy)
            .is_err());
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn auth_settings_are_checked_and_secrets_stay_hidden() {
        let ok = write(
            "[server]\npublic_url = \"https://tidemark.example\"\n\
             [auth.oidc]\nissuer_url = \"https://dex.example\"\nclient_id = \"tidemark\"\n\
             [[auth.bindings]]\ngroup = \"ops\"\nrole = \"deployer\"\nproject = \"web\"\n",
        );
        let s = Settings::load(
            Some(ok.path()),
            env(&[
                ("TIDEMARK__AUTH__OIDC__CLIENT_SECRET", "s3cret-value"),
                ("TIDEMARK__AUTH__ADMIN_PASSWORD", "adm1n-value"),
            ]),
        )
        .unwrap();
        let oidc = s.auth.oidc.as_ref().unwrap();
        assert_eq!(
            oidc.client_secret.as_ref().unwrap().expose(),
            "s3cret-value"
        );
        assert_eq!(oidc.groups_claim, "groups");
        assert_eq!(s.auth.bindings[0].role, app::model::Role::Deployer);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret-value") && !shown.contains("adm1n-value"),
            "{shown}"
        );

        let cases = [
            ("[auth.oidc]\nissuer_url = \"https://dex.example\"\nclient_id = \"t\"\n", "server.public_url"),
            ("[[auth.bindings]]\nrole = \"viewer\"\n", "auth.bindings[0]"),
            ("[[auth.bindings]]\ngroup = \"g\"\nuser = \"u\"\nrole = \"viewer\"\n", "auth.bindings[0]"),
            ("[[auth.bindings]]\ngroup = \"g\"\nrole = \"root\"\n", "auth.bindings[0].role"),
            ("[server]\npublic_url = \"https://t.example\"\n[auth.oidc]\nissuer_url = \"https://d\"\nclient_id = \"t\"\nallowed_algs = [\"HS256\"]\n", "auth.oidc.allowed_algs[0]"),
        ];
        for (text, key) in cases {
            let f = write(text);
            let err = Settings::load(Some(f.path()), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{text} -> {err}");
        }
    }

    #[test]
    fn defaults_are_embedded_sqlite_on_localhost_3000() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(s.database.url.expose(), "sqlite://data/tidemark.db");
    }

    #[test]
    fn environment_overrides_the_file_and_is_typed() {
        let f = write("[database]\nurl = \"sqlite://a.db\"\nmax_connections = 2\n");
        let s = Settings::load(
            Some(f.path()),
            env(&[
                ("TIDEMARK__DATABASE__URL", "postgres://u:pw@db/x"),
                ("TIDEMARK__DATABASE__MAX_CONNECTIONS", "20"),
                ("TIDEMARK__SERVER__LISTEN", "0.0.0.0:8080"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url.expose(), "postgres://u:pw@db/x");
        assert_eq!(s.database.max_connections, 20);
        assert_eq!(s.server.listen.port(), 8080);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let f = write("[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n");
        let err = Settings::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listn"), "{err}");

        let err = Settings::load(None, env(&[("TIDEMARK__DATABSE__URL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("databse"), "{err}");
    }

    #[test]
    fn database_password_never_appears_in_debug_or_display() {
        let s = Settings::load(
            None,
            env(&[("TIDEMARK__DATABASE__URL", "postgres://me:s3cret@db:5432/t")]),
        )
        .unwrap();
        let shown = format!("{s:?} {}", s.database.url);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://me:***@db:5432/t"), "{shown}");
    }

    #[test]
    fn a_cluster_names_exactly_one_way_to_reach_it_and_ignore_rules_parse() {
        let f = write(
            "[[clusters]]\nname = \"c\"\nurl = \"http://127.0.0.1:6443\"\nin_cluster = true\n",
        );
        let err = Settings::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clusters[0]") && err.contains("exactly one"),
            "{err}"
        );

        let f = write(
            "[[repositories]]\nname = \"r\"\nurl = \"file:///tmp/r\"\n\
             [[clusters]]\nname = \"c\"\nkubeconfig = \"/etc/kube/config\"\ncontext = \"prod\"\n\
             [[applications]]\nname = \"a\"\nrepository = \"r\"\npath = \"x\"\ncluster = \"c\"\nnamespace = \"n\"\n\
             [[applications.ignore]]\nkind = \"Deployment\"\njson_pointers = [\"/spec/replicas\"]\n",
        );
        let s = Settings::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.clusters[0].context.as_deref(), Some("prod"));
        assert_eq!(
            s.applications[0].ignore[0].json_pointers,
            ["/spec/replicas"]
        );
    }

    #[test]
    fn applications_must_reference_declared_repositories_and_clusters() {
        let f = write(
            "[[repositories]]\nname = \"r\"\nurl = \"file:///tmp/r\"\n\
             [[clusters]]\nname = \"c\"\nurl = \"http://127.0.0.1:6443\"\n\
             [[applications]]\nname = \"a\"\nrepository = \"nope\"\npath = \"x\"\ncluster = \"c\"\nnamespace = \"n\"\n",
        );
        let err = Settings::load(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("applications[0].repository") && err.contains("nope"),
            "{err}"
        );
    }
}
