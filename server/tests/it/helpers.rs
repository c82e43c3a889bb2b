//! Shared fixtures: databases on both backends, settings, a running server.

use server::config::{
    ApplicationSettings, ClusterSettings, DatabaseUrl, RepositorySettings, Settings,
};
use server::startup::Application;
use server::store::Store;

/// The bootstrap admin's password in every test's settings.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// PostgreSQL used by the tests; override with `TIDEMARK_TEST_POSTGRES_URL`.
pub fn postgres_admin_url() -> String {
    std::env::var("TIDEMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database on one backend, removed by [`TestDb::drop_db`].
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A new SQLite file in a temporary directory (the directory is created by the store).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/tidemark.db", dir.path().display());
        Self {
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A new database on the local PostgreSQL server. Panics with instructions when PostgreSQL
    /// does not answer: a store suite that silently skips a backend proves nothing.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL does not answer at {admin} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 or point TIDEMARK_TEST_POSTGRES_URL at a server."
                )
            });
        let name = format!("tidemark_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Self {
            url: url.to_string(),
            _dir: None,
            pg_name: Some(name),
        }
    }

    /// Both backends, for suites that must run unchanged on each.
    pub async fn both() -> [TestDb; 2] {
        [TestDb::sqlite(), TestDb::postgres().await]
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::load(None, Vec::new()).unwrap();
        s.database.url = DatabaseUrl::new(&self.url);
        s.server.listen = "127.0.0.1:0".parse().unwrap();
        s.auth.admin_password = Some(server::config::Secret::new(ADMIN_PASSWORD));
        // Git mirrors outside the source tree (the default, data/git, is relative to the cwd).
        s.git.cache_dir =
            std::env::temp_dir().join(format!("tidemark-it-git-{}", uuid::Uuid::new_v4().simple()));
        s
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.settings().database).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Drops the PostgreSQL database (SQLite files go with their temporary directory).
    pub async fn drop_db(self) {
        use sqlx::Connection;
        if let Some(name) = &self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A small declared catalog: two applications in one repository on one cluster.
pub fn catalog(settings: &mut Settings) {
    settings.repositories = vec![RepositorySettings::new(
        "examples",
        "https://git.example/examples.git",
    )];
    settings.clusters = vec![ClusterSettings {
        name: "sandbox".into(),
        url: "http://127.0.0.1:6443".into(),
        ..Default::default()
    }];
    settings.applications = ["guestbook", "podinfo"]
        .into_iter()
        .map(|name| ApplicationSettings {
            name: name.into(),
            project: "demo".into(),
            repository: "examples".into(),
            path: format!("apps/{name}"),
            revision: "main".into(),
            cluster: "sandbox".into(),
            namespace: name.into(),
            sync_policy: app::model::SyncPolicy::Manual,
            self_heal: false,
            prune: false,
            ignore: Vec::new(),
            approvals: Default::default(),
            compare: Default::default(),
            require_signed: false,
            source: None,
            helm: Default::default(),
        })
        .collect();
}

/// A running Tidemark on a free port; stops when dropped.
pub struct TestServer {
    pub base: String,
    /// Sends an admin API token with every request.
    pub client: reqwest::Client,
    /// Sends no credentials.
    pub anonymous: reqwest::Client,
    pub store: Store,
    pub db_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A client that sends `Authorization: Bearer {token}`.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        let store = Store::connect(&settings.database).await.unwrap();
        let db_url = settings.database.url.expose().to_owned();
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let mut server = Self {
            base,
            client: reqwest::Client::new(),
            anonymous: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            db_url,
            stop: Some(tx),
        };
        let token = server.token(app::model::Role::Admin, None).await;
        server.client = bearer_client(&token);
        server
    }

    /// A new API token with this role (and project).
    pub async fn token(&self, role: app::model::Role, project: Option<&str>) -> String {
        let name = format!("t-{}", uuid::Uuid::new_v4().simple());
        server::auth::tokens::create(
            &self.store,
            &server::store::Actor::system(),
            &name,
            role,
            project,
            server::clock::now(),
        )
        .await
        .unwrap()
    }

    /// A browser-like client (cookie jar, no redirects followed) signed in with the local form.
    pub async fn browser_signed_in(&self, username: &str, password: &str) -> reqwest::Client {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = client
            .post(format!("{}/auth/login", self.base))
            .header("origin", &self.base)
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let to = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(!to.contains("error="), "sign-in as {username} failed: {to}");
        client
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The real binary (`tidemark serve`) on a config file; killed with SIGKILL when dropped.
pub struct Process {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`, as printed by the process.
    pub base: String,
}

impl Process {
    /// Starts `tidemark --config CONFIG serve` and waits until it listens.
    pub fn start(config: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        while !line.starts_with("Tidemark is listening") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "tidemark exited before listening"
            );
        }
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(base.starts_with("http://"), "{line}");
        Self { child, base }
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployer API token made by the real CLI (`tidemark token create`) on a config file.
pub fn cli_token(config: &std::path::Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "token",
            "create",
            "--name",
            name,
        ])
        .args(["--role", "deployer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
