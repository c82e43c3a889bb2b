//! `tidemark`: the command line over the server library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use server::client;
use server::config::Settings;
use server::sandbox::{Sandbox, SandboxOptions};
use server::startup::{shutdown_signal, Application};
use server::store::Store;

/// Tidemark: GitOps with one timeline, approvals, one-click rollback and an audit ledger.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about)]
struct Cli {
    /// Settings file (TOML). Default: ./tidemark.toml when it exists. Every key can be
    /// overridden by an environment variable TIDEMARK__SECTION__KEY.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web dashboard and API (migrates the database first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run the sandbox cluster: a small Kubernetes API server over plain HTTP (docs/sandbox.md).
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// JSON file holding the cluster's state across restarts.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Milliseconds before simulated workloads report ready.
        #[arg(long, default_value_t = 0)]
        ready_delay_ms: u64,
    },
    /// The demo (what `make run` starts): a sandbox cluster, a generated Git repository with
    /// three applications, local accounts, and on the first start a short story of deploys.
    Demo {
        /// Where the demo keeps everything (`rm -rf` it to start over).
        #[arg(long, default_value = "data/demo")]
        dir: PathBuf,
        /// Tidemark's address.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// The sandbox cluster's address.
        #[arg(long, default_value = "127.0.0.1:6443")]
        sandbox: SocketAddr,
    },
    /// Print the REST API's OpenAPI 3.1 document (also served at /api/v1/openapi.json).
    Openapi,
    /// Manage API tokens (`Authorization: Bearer`): shown once, stored hashed.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit ledger: `verify` checks the database this host is configured with;
    /// `list`, `export` and `verify --remote` ask a running Tidemark (`--server`, `--token`).
    Audit {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Applications on a running Tidemark over its REST API (`--server`/TIDEMARK_SERVER,
    /// `--token`/TIDEMARK_TOKEN): list, get, diff, history, sync, refresh, approve, reject,
    /// rollback, unpin, wait. Exit codes: 0 done, 1 error, 2 wait timed out, 3 unhealthy or
    /// sync failed, 4 refused (401/403/409), 64 usage.
    App {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: client::AppCommand,
    },
    /// Sync requests on a running Tidemark.
    Request {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: client::RequestCommand,
    },
    /// Manage local accounts (sign-in with user name and password).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// viewer, deployer or admin.
        #[arg(long)]
        role: app::model::Role,
        /// Limit the token to the applications of one project.
        #[arg(long)]
        project: Option<String>,
    },
    /// Revoke the token of this name.
    Revoke { name: String },
    /// List live tokens (names, roles, last use; never the secrets).
    List,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exits 1 naming the first bad sequence number. With --remote,
    /// the server checks its ledger.
    Verify {
        #[arg(long)]
        remote: bool,
    },
    /// `list` and `export` from a running Tidemark.
    #[command(flatten)]
    Remote(client::AuditRemoteCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a local account, or reset its password; prints a generated password unless
    /// --password-stdin is given. Roles come from `[[auth.bindings]]` with `user = NAME`.
    Add {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE): 2 is `tidemark app wait` timing out.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    server::telemetry::init_logging();
    if let Some(result) = client_command(&cli) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return fail(&e),
        };
        return match runtime.block_on(result) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

type ClientRun =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), client::ClientError>>>>;

/// The commands that talk to a running Tidemark over REST (`None`: a local command).
fn client_command(cli: &Cli) -> Option<ClientRun> {
    match &cli.command {
        Command::App { remote, command } => {
            let (remote, command) = (remote.clone(), command.clone());
            Some(Box::pin(async move { client::app(&remote, command).await }))
        }
        Command::Request { remote, command } => {
            let (remote, command) = (remote.clone(), command.clone());
            Some(Box::pin(
                async move { client::request(&remote, command).await },
            ))
        }
        Command::Audit { remote, command } => {
            let command = match command {
                AuditCommand::Verify { remote: false } => return None,
                AuditCommand::Verify { remote: true } => client::AuditRemoteCommand::Verify,
                AuditCommand::Remote(c) => c.clone(),
            };
            let remote = remote.clone();
            Some(Box::pin(
                async move { client::audit(&remote, command).await },
            ))
        }
        _ => None,
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let settings = || {
        let default_file = PathBuf::from("tidemark.toml");
        let file = cli
            .config
            .clone()
            .or_else(|| default_file.exists().then_some(default_file));
        Settings::load(file.as_deref(), std::env::vars())
    };
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings()?).await?;
            if let Some(pw) = app.generated_admin_password() {
                println!("Bootstrap admin account created. Sign in as `admin` with this password (shown once):");
                println!("    {pw}");
                println!("(Set TIDEMARK__AUTH__ADMIN_PASSWORD to choose or reset it.)");
            }
            println!("Tidemark is listening on {}", app.public_url());
            app.run_until_stopped(shutdown_signal()).await?;
            println!("Tidemark stopped.");
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            println!(
                "{}",
                server::http::openapi::ApiDoc::openapi().to_pretty_json()?
            );
        }
        Command::Migrate => {
            let settings = settings()?;
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            store.close().await;
            println!("Database {} is up to date.", settings.database.url);
        }
        Command::Token { command } => {
            let settings = settings()?;
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            let result = token_command(&store, command).await;
            store.close().await;
            result?;
        }
        Command::Audit {
            command: AuditCommand::Verify { .. },
            ..
        } => {
            let settings = settings()?;
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            let v = store.audit_verify().await;
            store.close().await;
            let v = v?;
            match v.first_bad {
                None => println!("Audit ledger verified through #{}.", v.verified_through),
                Some(bad) => {
                    return Err(format!(
                        "audit ledger broken at #{bad}: {} (intact through #{})",
                        v.problem.unwrap_or_default(),
                        v.verified_through
                    )
                    .into())
                }
            }
        }
        Command::User { command } => {
            let settings = settings()?;
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            let result = user_command(&store, command).await;
            store.close().await;
            result?;
        }
        Command::Demo {
            ref dir,
            listen,
            sandbox,
        } => demo(dir, listen, sandbox).await?,
        Command::Sandbox {
            listen,
            ref state,
            ready_delay_ms,
        } => {
            let sandbox = Sandbox::new(SandboxOptions {
                state_file: state.clone(),
                ready_delay: Duration::from_millis(ready_delay_ms),
            })?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            println!("Sandbox cluster listening on http://{listen}");
            println!("Try: kubectl --server=http://{listen} get namespaces");
            sandbox.serve(listener, shutdown_signal()).await?;
        }
        // Answered over REST by `client_command` before the runtime for local commands starts.
        Command::App { .. } | Command::Request { .. } | Command::Audit { .. } => {
            return Err("this command talks to a running Tidemark".into())
        }
    }
    Ok(())
}

/// `tidemark demo`: sandbox and Tidemark in one process, the story told once.
async fn demo(
    dir: &std::path::Path,
    listen: SocketAddr,
    sandbox: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let demo = server::demo::Demo::prepare(dir, listen, sandbox)?;
    if demo.fresh {
        println!("Seeded a new demo under {}.", dir.display());
    }
    let cluster = Sandbox::new(SandboxOptions {
        state_file: Some(dir.join("sandbox.json")),
        ready_delay: Duration::from_millis(1500),
    })?;
    let listener = tokio::net::TcpListener::bind(sandbox).await.map_err(|e| {
        format!(
            "cannot listen on {sandbox} for the sandbox cluster: {e} (is another demo running?)"
        )
    })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cluster = tokio::spawn(cluster.serve(listener, async move {
        let mut stopped = stopped;
        let _ = stopped.changed().await;
    }));
    let inbox = server::demo::serve_inbox(demo.inbox.try_clone()?, dir)?;
    let app = Application::build(demo.settings.clone()).await?;
    let store = Store::connect(&demo.settings.database).await?;
    demo.accounts(&store).await?;
    store.close().await;
    let url = app.public_url().to_owned();
    println!("{}", demo.next_steps(&url));
    if demo.fresh {
        let (repo, credentials, base) = (dir.join("repo"), demo.credentials.clone(), url.clone());
        let done = dir.join("story-done");
        tokio::spawn(async move {
            println!("Playing the demo's recent history (deploys, a broken release, approvals)…");
            let told = async {
                server::demo::Storyteller::sign_in(&base, &repo, &credentials)
                    .await?
                    .tell()
                    .await
            };
            match told.await {
                Ok(()) => {
                    let _ = std::fs::write(&done, server::clock::rfc3339(server::clock::now()));
                    println!("Demo ready: guestbook runs a broken release (roll it back), requests wait on the Approvals page.");
                }
                Err(e) => eprintln!("{e}"),
            }
        });
    }
    app.run_until_stopped(shutdown_signal()).await?;
    let _ = stop.send(true);
    let _ = cluster.await;
    inbox.abort();
    println!(
        "Tidemark demo stopped; its state is kept under {}.",
        dir.display()
    );
    Ok(())
}

/// Whoever runs the binary on this machine, as the audit ledger's actor.
fn cli_actor() -> server::store::Actor {
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    server::store::Actor {
        id: format!("cli:{who}"),
        name: who,
        method: "cli".into(),
        source_ip: "local".into(),
    }
}

/// An audit row for something done on the command line.
fn cli_audit(action: &str, target: &str, details: serde_json::Value) -> server::store::AuditEvent {
    cli_actor().event(action, target, "success", details, server::clock::now())
}

async fn token_command(
    store: &Store,
    command: TokenCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    use server::auth::tokens;
    let now = server::clock::now();
    match command {
        TokenCommand::Create {
            name,
            role,
            project,
        } => {
            let secret =
                tokens::create(store, &cli_actor(), &name, role, project.as_deref(), now).await?;
            eprintln!(
                "Token `{name}` ({}) created. It is shown once; store it now:",
                role.as_str()
            );
            println!("{secret}");
        }
        TokenCommand::Revoke { name } => {
            tokens::revoke(store, &cli_actor(), &name, now).await?;
            println!("Token `{name}` revoked.");
        }
        TokenCommand::List => {
            for t in store.tokens().await? {
                println!(
                    "{}\t{}\t{}\tlast used {}",
                    t.name,
                    t.role,
                    t.project.as_deref().unwrap_or("*"),
                    t.last_used_at
                        .map(server::clock::rfc3339)
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
    }
    Ok(())
}

async fn user_command(
    store: &Store,
    command: UserCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    use server::auth::local;
    match command {
        UserCommand::Add {
            name,
            display_name,
            password_stdin,
        } => {
            if name.is_empty()
                || name.len() > server::auth::MAX_USERNAME_CHARS
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "user name `{name}` must be letters, digits, `-`, `_` or `.` (at most {} of them)",
                    server::auth::MAX_USERNAME_CHARS
                )
                .into());
            }
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (local::generate_password(), true)
            };
            if password.len() < 8 {
                return Err("the password needs at least 8 characters".into());
            }
            let hash = local::hash_password(&password).await?;
            let display = display_name.unwrap_or_else(|| name.clone());
            store
                .upsert_local_user(&name, &display, &hash, server::clock::now())
                .await?;
            store
                .audit(&cli_audit(
                    "user_add",
                    &format!("user:{name}"),
                    serde_json::json!({}),
                ))
                .await?;
            if generated {
                println!("Local account `{name}` ready. Password (shown once): {password}");
            } else {
                println!("Local account `{name}` ready.");
            }
        }
    }
    Ok(())
}

/// Prints one readable line and exits non-zero.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("tidemark: error: {e}");
    ExitCode::FAILURE
}
