//! Resident memory of a running Tidemark managing 1,000 applications with 10,000 objects in the
//! sandbox — each application 9 ConfigMaps and a Deployment of 2 replicas, whose ReplicaSet and
//! 2 Pods (3,000 descendants, made by the sandbox's simulated controller) Tidemark watches for
//! the live tree — (target: <= 150 MB). The sandbox runs in this process; Tidemark is the real
//! binary, measured from /proc once every application is Synced and 100 trees were read.
//!
//! `cargo bench -p server --bench memory` (`MEMORY_APPS` changes the number of applications).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::sandbox::{Sandbox, SandboxOptions};

const OBJECTS_PER_APP: usize = 10;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let apps: usize = std::env::var("MEMORY_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // MEMORY_DESCENDANTS=0: ConfigMaps only (no Deployment, no descendants), the baseline.
    let with_deployments = std::env::var("MEMORY_DESCENDANTS").map_or(true, |v| v != "0");
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    for a in 0..apps {
        let mut docs = String::new();
        if with_deployments {
            docs.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{a}-web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app-{a}}}}}\n  template:\n    metadata: {{labels: {{app: app-{a}}}}}\n    spec: {{containers: [{{name: web, image: 'nginx:1.27'}}]}}\n"
        ));
        }
        for o in usize::from(with_deployments)..OBJECTS_PER_APP {
            docs.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-{a}-cm-{o}, labels: {{app: app-{a}}}}}\ndata: {{key: value-{o}, owner: app-{a}}}\n"
            ));
        }
        let dir = repo.join(format!("apps/app-{a}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cms.yaml"), docs).unwrap();
    }
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=B",
        "-c",
        "user.email=b@example.com",
        "commit",
        "-q",
        "-m",
        "apps",
    ]);

    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        sandbox
            .clone()
            .serve(listener, std::future::pending::<()>()),
    );

    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}\"\n[git]\ncache_dir = \"{}\"\n\
         [reconcile]\ninterval_secs = 3600\n[[repositories]]\nname = \"bench\"\nurl = \"file://{}\"\n\
         [[clusters]]\nname = \"sandbox\"\nurl = \"{cluster}\"\n",
        work.path().join("tidemark.db").display(),
        work.path().join("git").display(),
        repo.display()
    );
    for a in 0..apps {
        config.push_str(&format!(
            "[[applications]]\nname = \"app-{a}\"\nrepository = \"bench\"\npath = \"apps/app-{a}\"\ncluster = \"sandbox\"\nnamespace = \"default\"\nsync_policy = \"auto\"\n"
        ));
    }
    let config_path = work.path().join("tidemark.toml");
    std::fs::File::create(&config_path)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();

    // Everything is behind sign-in: a viewer token for polling the list.
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "token",
            "create",
            "--name",
            "bench",
            "--role",
            "viewer",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["--config", config_path.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.starts_with("Tidemark is listening") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tidemark exited");
    }
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let mut synced = 0;
    for _ in 0..1200 {
        let list: serde_json::Value = client
            .get(format!("{base}/api/v1/applications"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        synced = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["sync_status"] == "Synced")
            .count();
        if synced == apps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let rss_synced = rss_kib(child.id(), "VmRSS:");
    // Read 100 trees (each: the Deployment, its ReplicaSet and 2 Pods, plus 9 ConfigMaps).
    let tree_started = Instant::now();
    let mut nodes = 0;
    for a in 0..apps.min(100) {
        let tree: serde_json::Value = client
            .get(format!("{base}/api/v1/applications/app-{a}/tree"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        nodes += tree["count"].as_u64().unwrap_or(0);
    }
    let tree_took = tree_started.elapsed();
    let pid = child.id();
    let (rss, peak) = (rss_kib(pid, "VmRSS:"), rss_kib(pid, "VmHWM:"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(synced, apps, "not every application reached Synced");
    println!(
        "{apps} applications, {} objects from Git and {} descendants in the sandbox, all Synced after {took:.1?}",
        apps * OBJECTS_PER_APP,
        if with_deployments { apps * 3 } else { 0 }
    );
    println!(
        "{} trees read ({nodes} nodes) in {tree_took:.1?}; resident memory before them: {:.1} MB",
        apps.min(100),
        rss_synced as f64 / 1024.0
    );
    println!(
        "tidemark resident memory: {:.1} MB now, {:.1} MB peak (target <= 150 MB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
