//! `tidemark demo` (what `make run` starts): the whole story on one machine with no cluster and
//! no identity provider. Everything lives under one directory (default `data/demo`):
//!
//! - `repo/`: a Git repository made with the `git` CLI: `guestbook` (plain YAML, manual, two
//!   approvals), `podinfo` (Kustomize base + overlay, manual, one approval) and `frontend`
//!   (auto-sync + self-heal), each with a history of about ten commits, and `shop` (the Helm
//!   chart `charts/shop` with per-environment values in `envs/`, auto-sync);
//! - `sandbox.json`: the sandbox cluster's state (served on 127.0.0.1:6443);
//! - `tidemark.db`: the SQLite database; `credentials.json`: the demo accounts' passwords;
//!   `story-done`: written when the first start's story has played.
//!
//! On the first start a storyteller replays the last steps of each history through the REST API
//! as the demo's people would (commits, approvals by `deployer1` and `deployer2`, auto-syncs),
//! so known-good and broken revisions, a pending request and a degraded application are there
//! to look at. Later starts keep the state; `rm -rf data/demo` seeds again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::config::{
    ApplicationSettings, ApprovalPolicy, ClusterSettings, RepositorySettings, RoleBinding, Secret,
    Settings,
};

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Io(String),
    #[error("git failed: {0}")]
    Git(String),
    #[error("the demo story stopped: {0}")]
    Story(String),
}

fn io(context: &str) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |e| DemoError::Io(format!("{context}: {e}"))
}

/// The demo's people and their passwords (kept across restarts).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub admin: String,
    pub deployer1: String,
    pub deployer2: String,
}

/// A prepared demo: its settings, people, and whether it was seeded just now.
pub struct Demo {
    pub dir: PathBuf,
    pub settings: Settings,
    pub credentials: Credentials,
    pub fresh: bool,
    pub sandbox: SocketAddr,
    /// The local webhook receiver every notification goes to (see [`serve_inbox`]).
    pub inbox: std::net::TcpListener,
}

const AUTHORS: [(&str, &str); 3] = [
    ("Alice Example", "alice@example.com"),
    ("Bob Example", "bob@example.com"),
    ("Carol Example", "carol@example.com"),
];

/// The demo's `[[projects]]` and `[[generators]]`, written as a user would in tidemark.toml.
#[derive(serde::Deserialize)]
struct DemoProjects {
    projects: Vec<crate::config::ProjectSettings>,
    generators: Vec<crate::config::GeneratorSettings>,
}

fn git(
    repo: &Path,
    args: &[&str],
    author: usize,
    hours_ago: Option<u32>,
) -> Result<String, DemoError> {
    let (name, email) = AUTHORS[author % AUTHORS.len()];
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args([
            "-c",
            &format!("user.name={name}"),
            "-c",
            &format!("user.email={email}"),
        ])
        .args(args);
    if let Some(h) = hours_ago {
        let at = crate::clock::now() / 1000 - i64::from(h) * 3600;
        cmd.env("GIT_AUTHOR_DATE", format!("@{at} +0000"))
            .env("GIT_COMMITTER_DATE", format!("@{at} +0000"));
    }
    let out = cmd
        .output()
        .map_err(|e| DemoError::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(DemoError::Git(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn write(repo: &Path, path: &str, content: &str) -> Result<(), DemoError> {
    let file = repo.join(path);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the demo repository"))?;
    }
    std::fs::write(&file, content).map_err(io("writing the demo repository"))
}

/// YAML from lines (indentation matters: no string continuations here).
fn lines(parts: &[&str]) -> String {
    let mut out = parts.join("\n");
    out.push('\n');
    out
}

fn guestbook(image: &str, replicas: u32, title: &str) -> String {
    lines(&[
        "apiVersion: v1",
        "kind: Namespace",
        "metadata: {name: guestbook}",
        "---",
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata: {name: frontend, labels: {app: guestbook}}",
        "spec:",
        &format!("  replicas: {replicas}"),
        "  selector: {matchLabels: {app: guestbook}}",
        "  template:",
        "    metadata: {labels: {app: guestbook}}",
        &format!("    spec: {{containers: [{{name: php-redis, image: \"{image}\"}}]}}"),
        "---",
        "apiVersion: v1",
        "kind: Service",
        "metadata: {name: frontend}",
        "spec: {selector: {app: guestbook}, ports: [{port: 80}]}",
        "---",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata: {name: guestbook}",
        &format!("data: {{title: \"{title}\"}}"),
        "---",
        "apiVersion: v1",
        "kind: Secret",
        "metadata: {name: guestbook-db}",
        "stringData: {password: demo-password-not-shown}",
    ])
}

fn podinfo_overlay(tag: &str, replicas: u32, color: &str) -> String {
    lines(&[
        "resources: [../../base, namespace.yaml]",
        "namespace: podinfo",
        &format!("images: [{{name: ghcr.io/stefanprodan/podinfo, newTag: \"{tag}\"}}]"),
        &format!("replicas: [{{name: podinfo, count: {replicas}}}]"),
        &format!("commonAnnotations: {{demo/ui-color: \"{color}\"}}"),
    ])
}

fn frontend(tag: &str, replicas: u32) -> String {
    lines(&[
        "apiVersion: v1",
        "kind: Namespace",
        "metadata: {name: frontend}",
        "---",
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata: {name: web}",
        "spec:",
        &format!("  replicas: {replicas}"),
        "  selector: {matchLabels: {app: web}}",
        "  template:",
        "    metadata: {labels: {app: web}}",
        &format!("    spec: {{containers: [{{name: web, image: \"nginx:{tag}\"}}]}}"),
    ])
}

/// The demo's Helm chart (`charts/shop`): a namespace, a Deployment, a ConfigMap and a
/// pre-upgrade migration Job (a Helm hook, applied before the rest).
const SHOP_CHART: [(&str, &str); 6] = [
    (
        "charts/shop/Chart.yaml",
        "apiVersion: v2\nname: shop\ndescription: The demo's shop, a Helm chart rendered by helm template\nversion: 0.1.0\nappVersion: \"1.0\"\n",
    ),
    (
        "charts/shop/values.yaml",
        "# Defaults; each environment overrides them in envs/<env>/shop.yaml.\nreplicas: 1\nimage:\n  repository: nginx\n  tag: \"1.27\"\nbanner: Welcome\n",
    ),
    (
        "charts/shop/templates/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ .Release.Namespace }}\n",
    ),
    (
        "charts/shop/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\n  labels: {app.kubernetes.io/name: shop, helm.sh/chart: {{ printf \"%s-%s\" .Chart.Name .Chart.Version | quote }}}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app.kubernetes.io/name: shop}}\n  template:\n    metadata: {labels: {app.kubernetes.io/name: shop}}\n    spec:\n      containers:\n      - name: web\n        image: {{ printf \"%s:%s\" .Values.image.repository .Values.image.tag | quote }}\n",
    ),
    (
        "charts/shop/templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-banner\ndata:\n  banner: {{ required \"banner is required\" .Values.banner | quote }}\n",
    ),
    (
        "charts/shop/templates/migrate.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-weight: \"-1\"\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: migrate, image: \"busybox:1.36\", command: [\"true\"]}]\n",
    ),
];

/// Per-environment values of the shop chart (`envs/<env>/shop.yaml`).
fn shop_values(replicas: u32, tag: &str, banner: &str) -> String {
    lines(&[
        &format!("replicas: {replicas}"),
        "image:",
        &format!("  tag: \"{tag}\""),
        &format!("banner: \"{banner}\""),
    ])
}

/// The older history: written with dates in the past, never deployed.
fn seed_repository(repo: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(repo).map_err(io("creating the demo repository"))?;
    git(repo, &["init", "-q", "-b", "main"], 0, None)?;
    write(
        repo,
        "README.md",
        "# Tidemark demo\n\nThree applications under apps/ and a Helm chart under charts/shop (values per\nenvironment in envs/). Edit, commit, and watch Tidemark's timeline.\n",
    )?;

    write(
        repo,
        "apps/podinfo/base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n    spec: {containers: [{name: podinfo, image: \"ghcr.io/stefanprodan/podinfo:6.0.0\"}]}\n",
    )?;
    write(
        repo,
        "apps/podinfo/base/kustomization.yaml",
        "resources: [deployment.yaml]\n",
    )?;
    write(
        repo,
        "apps/podinfo/overlays/demo/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: podinfo}\n",
    )?;
    let steps: [(&str, String, &str); 24] = [
        (
            "apps/guestbook/app.yaml",
            guestbook("gcr.io/google-samples/gb-frontend:v4", 1, "Guestbook"),
            "guestbook: first version",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.0.0", 1, "#34577c"),
            "podinfo: demo overlay",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.23", 1),
            "frontend: nginx 1.23",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook("gcr.io/google-samples/gb-frontend:v4", 2, "Guestbook"),
            "guestbook: two replicas",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.1.0", 1, "#34577c"),
            "podinfo: 6.1.0",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.24", 1),
            "frontend: nginx 1.24",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook("gcr.io/google-samples/gb-frontend:v5", 2, "Guestbook"),
            "guestbook: frontend v5",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.2.0", 2, "#34577c"),
            "podinfo: 6.2.0, two replicas",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.24", 2),
            "frontend: two replicas",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook(
                "gcr.io/google-samples/gb-frontend:v5",
                2,
                "Tidemark guestbook",
            ),
            "guestbook: new title",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.3.0", 2, "#34577c"),
            "podinfo: 6.3.0",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.25", 2),
            "frontend: nginx 1.25",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook(
                "gcr.io/google-samples/gb-frontend:v5",
                3,
                "Tidemark guestbook",
            ),
            "guestbook: three replicas",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.4.0", 2, "#2a6f97"),
            "podinfo: 6.4.0, new colour",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.25.3", 2),
            "frontend: nginx 1.25.3",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook(
                "gcr.io/google-samples/gb-frontend:v6",
                3,
                "Tidemark guestbook",
            ),
            "guestbook: frontend v6",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.5.0", 2, "#2a6f97"),
            "podinfo: 6.5.0",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.26", 2),
            "frontend: nginx 1.26",
        ),
        (
            "apps/guestbook/app.yaml",
            guestbook(
                "gcr.io/google-samples/gb-frontend:v6",
                2,
                "Tidemark guestbook",
            ),
            "guestbook: back to two replicas",
        ),
        (
            "apps/podinfo/overlays/demo/kustomization.yaml",
            podinfo_overlay("6.5.1", 2, "#2a6f97"),
            "podinfo: 6.5.1",
        ),
        (
            "apps/frontend/app.yaml",
            frontend("1.26", 3),
            "frontend: three replicas",
        ),
        (
            "envs/demo/shop.yaml",
            shop_values(1, "1.27", "Welcome to the demo shop"),
            "shop: a Helm chart, with values per environment",
        ),
        (
            "envs/demo/shop.yaml",
            shop_values(2, "1.27", "Welcome to the demo shop"),
            "shop: two replicas",
        ),
        (
            "envs/demo/shop.yaml",
            shop_values(2, "1.27.3", "Winter sale"),
            "shop: nginx 1.27.3, winter banner",
        ),
    ];
    let total = u32::try_from(steps.len()).unwrap_or(u32::MAX);
    for (i, (path, content, message)) in steps.iter().enumerate() {
        // The chart arrives with its first values (its own commit in its history).
        if *path == "envs/demo/shop.yaml" && !repo.join("charts/shop").exists() {
            for (file, text) in SHOP_CHART {
                write(repo, file, text)?;
            }
            write(
                repo,
                "envs/staging/shop.yaml",
                &shop_values(1, "1.27", "Staging: not for customers"),
            )?;
        }
        write(repo, path, content)?;
        git(repo, &["add", "-A"], i, None)?;
        let age = (total - u32::try_from(i).unwrap_or(0)) * 6;
        git(repo, &["commit", "-q", "-m", message], i, Some(age))?;
    }
    // Applications declared in Git: one per directory under teams/ (the `teams` generator), and
    // the app of apps `platform`, one of whose definitions leaves the project's bounds.
    for team in ["blog", "wiki"] {
        write(
            repo,
            &format!("teams/{team}/config.yaml"),
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-{team}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {team}-settings}}\ndata: {{owner: team-{team}}}\n"
            ),
        )?;
    }
    write(
        repo,
        "apps/docs/config.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: docs}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: docs-site}\ndata: {theme: tide}\n",
    )?;
    write(
        repo,
        "platform/applications.yaml",
        "apiVersion: tidemark.dev/v1\nkind: Application\nmetadata: {name: docs}\nspec: {path: apps/docs, cluster: sandbox, namespace: docs, sync_policy: auto, prune: true}\n---\napiVersion: tidemark.dev/v1\nkind: Application\nmetadata: {name: metrics}\nspec: {path: apps/docs, cluster: sandbox, namespace: kube-system}\n",
    )?;
    git(repo, &["add", "-A"], 1, None)?;
    git(
        repo,
        &[
            "commit",
            "-q",
            "-m",
            "platform: applications declared in Git",
        ],
        1,
        Some(2),
    )?;
    Ok(())
}

fn password() -> String {
    crate::auth::random_token(12)
}

impl Demo {
    /// Creates (or reopens) the demo under `dir`: repository, passwords, settings.
    pub fn prepare(dir: &Path, listen: SocketAddr, sandbox: SocketAddr) -> Result<Self, DemoError> {
        std::fs::create_dir_all(dir).map_err(io("creating the demo directory"))?;
        let repo = dir.join("repo");
        let fresh = !repo.join(".git").exists();
        if fresh {
            let _ = std::fs::remove_dir_all(&repo);
            let _ = std::fs::remove_file(dir.join("tidemark.db"));
            let _ = std::fs::remove_file(dir.join("sandbox.json"));
            seed_repository(&repo)?;
        }
        let cred_file = dir.join("credentials.json");
        let credentials = match std::fs::read_to_string(&cred_file) {
            Ok(text) if !fresh => serde_json::from_str(&text)
                .map_err(|e| DemoError::Io(format!("{}: {e}", cred_file.display())))?,
            _ => {
                let c = Credentials {
                    admin: password(),
                    deployer1: password(),
                    deployer2: password(),
                };
                let text = serde_json::to_string_pretty(&c).unwrap_or_default();
                std::fs::write(&cred_file, text).map_err(io("saving the demo passwords"))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        &cred_file,
                        std::fs::Permissions::from_mode(0o600),
                    );
                }
                c
            }
        };
        let mut settings =
            Settings::load(None, std::env::vars()).map_err(|e| DemoError::Io(e.to_string()))?;
        settings.server.listen = listen;
        settings.database.url = crate::config::DatabaseUrl::new(format!(
            "sqlite://{}",
            dir.join("tidemark.db").display()
        ));
        settings.git.cache_dir = dir.join("git-cache");
        settings.reconcile.interval_secs = 5;
        let mut repository = RepositorySettings::new("demo", repo.to_string_lossy().into_owned());
        repository.fetch_interval_secs = 5;
        settings.repositories = vec![repository];
        settings.clusters = vec![ClusterSettings {
            name: "sandbox".into(),
            url: format!("http://{sandbox}"),
            ..Default::default()
        }];
        let app = |name: &str, path: &str, policy: app::model::SyncPolicy, self_heal, required| {
            ApplicationSettings {
                name: name.into(),
                project: "demo".into(),
                repository: "demo".into(),
                path: path.into(),
                revision: "main".into(),
                cluster: "sandbox".into(),
                namespace: name.into(),
                sync_policy: policy,
                self_heal,
                prune: true,
                ignore: Vec::new(),
                approvals: ApprovalPolicy {
                    required,
                    ..Default::default()
                },
                compare: Default::default(),
                require_signed: false,
                source: None,
                helm: Default::default(),
            }
        };
        let mut shop = app(
            "shop",
            "charts/shop",
            app::model::SyncPolicy::Auto,
            false,
            0,
        );
        shop.helm.values_files = vec!["../../envs/demo/shop.yaml".into()];
        settings.applications = vec![
            app(
                "guestbook",
                "apps/guestbook",
                app::model::SyncPolicy::Manual,
                false,
                2,
            ),
            app(
                "podinfo",
                "apps/podinfo/overlays/demo",
                app::model::SyncPolicy::Manual,
                false,
                1,
            ),
            app(
                "frontend",
                "apps/frontend",
                app::model::SyncPolicy::Auto,
                true,
                0,
            ),
            shop,
            app(
                "platform",
                "platform",
                app::model::SyncPolicy::Auto,
                false,
                0,
            ),
        ];
        // What Git may declare in the demo project (the `platform` root and `teams` generator).
        settings.projects = toml::from_str::<DemoProjects>(
            r#"
            [[projects]]
            name = "demo"
            source_repositories = ["demo"]
            destinations = [{ cluster = "sandbox", namespace = "team-*" }, { cluster = "sandbox", namespace = "docs" }]
            cluster_resources = [{ group = "", kind = "Namespace" }]
            [[generators]]
            name = "teams"
            project = "demo"
            repository = "demo"
            path_glob = "teams/*"
            template = { cluster = "sandbox", namespace = "team-{{name}}", sync_policy = "auto", prune = true }
            "#,
        )
        .map(|d| {
            settings.generators = d.generators;
            d.projects
        })
        .map_err(|e| DemoError::Io(format!("demo project settings: {e}")))?;
        // Notifications: every trigger, signed, to a receiver inside the demo process that
        // appends them to notifications.jsonl.
        let inbox = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(io("opening the demo's notification inbox"))?;
        let inbox_port = inbox
            .local_addr()
            .map_err(io("opening the demo's notification inbox"))?
            .port();
        let key_file = dir.join("inbox.key");
        if fresh || !key_file.exists() {
            std::fs::write(&key_file, password()).map_err(io("saving the inbox key"))?;
        }
        settings.notifications = toml::from_str(&format!(
            r#"
            [[targets]]
            name = "demo-inbox"
            type = "webhook"
            url = "http://127.0.0.1:{inbox_port}/hook"
            secret_file = "{}"
            [[subscriptions]]
            target = "demo-inbox"
            triggers = {:?}
            "#,
            key_file.display(),
            crate::notify::Trigger::ALL.map(|t| t.as_str())
        ))
        .map_err(|e| DemoError::Io(format!("demo notification settings: {e}")))?;
        settings.auth.admin_password = Some(Secret::new(credentials.admin.clone()));
        settings.auth.bindings = ["deployer1", "deployer2"]
            .into_iter()
            .map(|u| RoleBinding {
                group: None,
                user: Some(u.into()),
                role: app::model::Role::Deployer,
                project: None,
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            settings,
            credentials,
            fresh,
            sandbox,
            inbox,
        })
    }

    /// Creates (or resets) the two deployer accounts.
    pub async fn accounts(&self, store: &crate::store::Store) -> Result<(), DemoError> {
        for (user, display, pw) in [
            ("deployer1", "Deployer One", &self.credentials.deployer1),
            ("deployer2", "Deployer Two", &self.credentials.deployer2),
        ] {
            let hash = crate::auth::local::hash_password(pw)
                .await
                .map_err(|e| DemoError::Io(e.to_string()))?;
            store
                .upsert_local_user(user, display, &hash, crate::clock::now())
                .await
                .map_err(|e| DemoError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// What to print once everything listens.
    pub fn next_steps(&self, url: &str) -> String {
        let c = &self.credentials;
        let repo = self.dir.join("repo");
        let repo = repo.display();
        let s = self.sandbox;
        let dir = self.dir.display();
        lines(&[
            "",
            &format!("Tidemark demo is running: {url}"),
            "",
            "Sign in (two browser windows for four-eyes approvals):",
            &format!("    admin      {}", c.admin),
            &format!("    deployer1  {}", c.deployer1),
            &format!("    deployer2  {}", c.deployer2),
            "",
            "Applications: guestbook (manual, 2 approvals), podinfo (Kustomize, manual, 1 approval),",
            "frontend (auto-sync + self-heal), shop (a Helm chart with per-environment values, auto-sync);",
            "declared in Git: docs (by the app of apps platform, which refuses metrics: kube-system is out",
            "of bounds) and blog, wiki (one per directory under teams/, by the generator teams).",
            "The repository is polled every 5 s.",
            "",
            "Create drift (guestbook shows it; frontend heals itself):",
            &format!("    kubectl --server=http://{s} -n guestbook scale deployment frontend --replicas=5"),
            "",
            "Make a new revision:",
            &format!("    sed -i 's/replicas: 3/replicas: 4/' {repo}/apps/guestbook/app.yaml && git -C {repo} -c user.name=You -c user.email=you@example.com commit -qam \"guestbook: four replicas\""),
            "",
            "Change the chart's values for the demo environment (helm template renders it):",
            &format!("    sed -i 's/replicas: 2/replicas: 3/' {repo}/envs/demo/shop.yaml && git -C {repo} -c user.name=You -c user.email=you@example.com commit -qam \"shop: three replicas\""),
            "",
            &format!("Notifications (signed webhooks) land in {dir}/notifications.jsonl; admins see the"),
            "deliveries under Audit → Notifications.",
            "",
            &format!("State is kept under {dir}; `rm -rf {dir}` starts over. Ctrl-C stops."),
        ])
    }
}

/// Serves the demo's notification inbox: each POST is checked against the key in `inbox.key`
/// and appended to `notifications.jsonl` as `{"received_at", "signature_ok", "payload"}`.
pub fn serve_inbox(
    listener: std::net::TcpListener,
    dir: &Path,
) -> Result<tokio::task::JoinHandle<()>, DemoError> {
    let key = std::fs::read_to_string(dir.join("inbox.key")).map_err(io("reading inbox.key"))?;
    let log = dir.join("notifications.jsonl");
    let listener = tokio::net::TcpListener::from_std(listener).map_err(io("serving the inbox"))?;
    let receive = move |headers: axum::http::HeaderMap, body: String| {
        let (key, log) = (key.clone(), log.clone());
        async move {
            let signature = headers
                .get("x-tidemark-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let ok = signature == format!("sha256={}", crate::notify::sign(key.trim(), &body));
            let line = serde_json::json!({
                "received_at": crate::clock::rfc3339(crate::clock::now()),
                "signature_ok": ok,
                "payload": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            });
            let appended = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .and_then(|mut f| writeln!(f, "{line}"))
            })
            .await;
            match appended {
                Ok(Ok(())) => axum::http::StatusCode::NO_CONTENT,
                _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(receive));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo's notification inbox stopped");
        }
    }))
}

/// Plays the last steps of each application's history against a running Tidemark, as its
/// people would: commit, refresh, approve (deployer1, deployer2), wait for the sync.
pub struct Storyteller {
    base: String,
    repo: PathBuf,
    admin: reqwest::Client,
    deployers: [reqwest::Client; 2],
}

impl Storyteller {
    pub async fn sign_in(base: &str, repo: &Path, c: &Credentials) -> Result<Self, DemoError> {
        let login = |user: &'static str, pw: String| {
            let base = base.to_owned();
            async move {
                let client = reqwest::Client::builder()
                    .cookie_store(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| DemoError::Story(e.to_string()))?;
                let resp = client
                    .post(format!("{base}/auth/login"))
                    .header("origin", &base)
                    .form(&[("username", user), ("password", pw.as_str()), ("next", "/")])
                    .send()
                    .await
                    .map_err(|e| DemoError::Story(e.to_string()))?;
                let to = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or_default();
                if to.starts_with("/login") {
                    return Err(DemoError::Story(format!("{user} could not sign in")));
                }
                Ok::<_, DemoError>(client)
            }
        };
        Ok(Self {
            base: base.to_owned(),
            repo: repo.to_path_buf(),
            admin: login("admin", c.admin.clone()).await?,
            deployers: [
                login("deployer1", c.deployer1.clone()).await?,
                login("deployer2", c.deployer2.clone()).await?,
            ],
        })
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
    ) -> Result<Value, DemoError> {
        let url = format!("{}{path}", self.base);
        let req = if method == "POST" {
            client.post(url).header("origin", &self.base)
        } else {
            client.get(url)
        };
        let resp = req
            .send()
            .await
            .map_err(|e| DemoError::Story(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(DemoError::Story(format!(
                "{method} {path}: {status} {body}"
            )));
        }
        Ok(body)
    }

    async fn commit(
        &self,
        path: &str,
        content: &str,
        message: &str,
        author: usize,
    ) -> Result<String, DemoError> {
        write(&self.repo, path, content)?;
        git(&self.repo, &["add", "-A"], author, None)?;
        git(&self.repo, &["commit", "-q", "-m", message], author, None)?;
        git(&self.repo, &["rev-parse", "HEAD"], author, None)
    }

    /// Waits until `check` finds what it looks for (up to a minute).
    async fn until<F, Fut>(&self, what: &str, mut check: F) -> Result<Value, DemoError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Value>, DemoError>>,
    {
        for _ in 0..240 {
            if let Some(v) = check().await? {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(DemoError::Story(format!("gave up waiting for {what}")))
    }

    /// A commit for a manual application, approved by `approvers` of the two deployers (none:
    /// left pending).
    async fn manual(
        &self,
        app: &str,
        path: &str,
        content: &str,
        message: &str,
        approvers: usize,
    ) -> Result<(), DemoError> {
        let sha = self.commit(path, content, message, approvers + 1).await?;
        self.call(
            &self.admin,
            "POST",
            &format!("/api/v1/applications/{app}/refresh"),
        )
        .await?;
        let request = self
            .until(&format!("the sync request of {app} at {sha}"), || async {
                let list = self
                    .call(
                        &self.admin,
                        "GET",
                        &format!("/api/v1/sync-requests?status=pending&application={app}"),
                    )
                    .await?;
                Ok(list["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|r| r["revision"] == sha.as_str()))
                    .cloned())
            })
            .await?;
        let id = request["id"].as_i64().unwrap_or_default();
        for who in self.deployers.iter().take(approvers) {
            self.call(who, "POST", &format!("/api/v1/sync-requests/{id}/approve"))
                .await?;
        }
        if approvers > 0 {
            self.settled(app, &sha).await?;
        }
        Ok(())
    }

    /// A commit for the auto-sync application; waits until it is deployed.
    async fn auto(
        &self,
        app: &str,
        path: &str,
        content: &str,
        message: &str,
    ) -> Result<(), DemoError> {
        let sha = self.commit(path, content, message, 2).await?;
        self.call(
            &self.admin,
            "POST",
            &format!("/api/v1/applications/{app}/refresh"),
        )
        .await?;
        self.settled(app, &sha).await
    }

    /// Deployed at `sha` and no longer progressing.
    async fn settled(&self, app: &str, sha: &str) -> Result<(), DemoError> {
        self.until(&format!("{app} to settle at {sha}"), || async {
            let a = self
                .call(&self.admin, "GET", &format!("/api/v1/applications/{app}"))
                .await?;
            let status = &a["status"];
            Ok((status["deployed_revision"] == sha
                && status["health"]
                    .as_str()
                    .is_some_and(|h| h != "Progressing" && h != "Missing"))
            .then(|| a.clone()))
        })
        .await
        .map(|_| ())
    }

    /// The story: good and broken deploys, a pending request.
    pub async fn tell(&self) -> Result<(), DemoError> {
        let gb = "apps/guestbook/app.yaml";
        let title = "Tidemark guestbook";
        self.manual(
            "guestbook",
            gb,
            &guestbook("gcr.io/google-samples/gb-frontend:v6", 3, title),
            "guestbook: three replicas for the launch",
            2,
        )
        .await?;
        self.manual(
            "guestbook",
            gb,
            &guestbook("gcr.io/google-samples/gb-frontend:broken", 3, title),
            "guestbook: try the new frontend build",
            2,
        )
        .await?;
        self.manual(
            "guestbook",
            gb,
            &guestbook(
                "gcr.io/google-samples/gb-frontend:v6",
                3,
                "Tidemark guestbook (fixed)",
            ),
            "guestbook: back to v6",
            0,
        )
        .await?;
        let po = "apps/podinfo/overlays/demo/kustomization.yaml";
        self.manual(
            "podinfo",
            po,
            &podinfo_overlay("6.5.2", 2, "#2a6f97"),
            "podinfo: 6.5.2",
            1,
        )
        .await?;
        self.manual(
            "podinfo",
            po,
            &podinfo_overlay("6.5.3", 3, "#2a6f97"),
            "podinfo: 6.5.3, three replicas",
            1,
        )
        .await?;
        self.manual(
            "podinfo",
            po,
            &podinfo_overlay("6.5.4", 3, "#1f7a4d"),
            "podinfo: 6.5.4, green",
            0,
        )
        .await?;
        let fe = "apps/frontend/app.yaml";
        self.auto("frontend", fe, &frontend("1.27", 3), "frontend: nginx 1.27")
            .await?;
        self.auto(
            "frontend",
            fe,
            &frontend("broken", 3),
            "frontend: nginx from the broken tag",
        )
        .await?;
        self.auto(
            "frontend",
            fe,
            &frontend("1.27.1", 3),
            "frontend: nginx 1.27.1",
        )
        .await?;
        // The Helm chart: two deploys of new values, rendered by `helm template`.
        let shop = "envs/demo/shop.yaml";
        self.auto(
            "shop",
            shop,
            &shop_values(3, "1.27.3", "Winter sale"),
            "shop: three replicas for the sale",
        )
        .await?;
        self.auto(
            "shop",
            shop,
            &shop_values(3, "1.27.4", "Winter sale: last days"),
            "shop: nginx 1.27.4, new banner",
        )
        .await?;
        Ok(())
    }
}
