//! `tidemark`: the command line over the server library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server::telemetry::init_logging();
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
            println!("Tidemark is listening on {}", app.public_url());
            app.run_until_stopped(shutdown_signal()).await?;
            println!("Tidemark stopped.");
        }
        Command::Migrate => {
            let settings = settings()?;
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            store.close().await;
            println!("Database {} is up to date.", settings.database.url);
        }
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
    }
    Ok(())
}

/// Prints one readable line and exits non-zero.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("tidemark: error: {e}");
    ExitCode::FAILURE
}
