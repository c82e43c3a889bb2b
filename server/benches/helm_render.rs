//! Helm render benchmark, with the baseline measured in the same run: one chart (`helm create`
//! plus a values file elsewhere in the repository) rendered by Tidemark — checkout of the chart
//! and values from the Git object database, `helm template` in the bubblewrap sandbox, parsing,
//! hook filtering, canonical sort and digest — against `helm template` run alone on the same
//! chart directory on disk (no sandbox, no parsing).
//!
//! `cargo bench -p server --bench helm_render` (`HELM_BENCH_RUNS`, default 20). Prints the
//! median of each and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use server::render::{self, HelmOptions, Limits};

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HELM_CACHE_HOME", dir.join(".h/cache"))
        .env("HELM_CONFIG_HOME", dir.join(".h/config"))
        .env("HELM_DATA_HOME", dir.join(".h/data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("HELM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    run(repo, "git", &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.join("charts")).unwrap();
    std::fs::create_dir_all(repo.join("envs")).unwrap();
    run(&repo.join("charts"), "helm", &["create", "web"]);
    std::fs::write(repo.join("envs/prod.yaml"), "replicaCount: 3\n").unwrap();
    run(repo, "git", &["add", "-A"]);
    run(
        repo,
        "git",
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@x",
            "commit",
            "-qm",
            "chart",
        ],
    );
    let git = git2::Repository::open(repo).unwrap();
    let head = git.head().unwrap().peel_to_commit().unwrap().id();
    let helm = HelmOptions {
        values_files: vec!["../../envs/prod.yaml".into()],
        ..Default::default()
    };
    let limits = Limits::default();
    let source = render::Source {
        app: "web",
        path: "charts/web",
        namespace: "web",
        source: None,
        helm: &helm,
        capabilities: None,
        capabilities_error: None,
    };
    // Warm-up (page cache, binaries).
    render::render_source(&git, head, &source, &limits).unwrap();
    let mut alone = Vec::with_capacity(runs);
    let mut tidemark = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        run(
            repo,
            "helm",
            &[
                "template",
                "web",
                "charts/web",
                "--namespace",
                "web",
                "--skip-tests",
                "--include-crds",
                "--values",
                "envs/prod.yaml",
            ],
        );
        alone.push(t.elapsed());
        let t = Instant::now();
        let r = render::render_source(&git, head, &source, &limits).unwrap();
        tidemark.push(t.elapsed());
        assert!(r.objects.len() >= 3);
    }
    let (a, t) = (median(alone), median(tidemark));
    println!(
        "helm template alone: median {:.1} ms over {runs} runs",
        a.as_secs_f64() * 1e3
    );
    println!(
        "Tidemark render (checkout + sandboxed helm template + parse + digest): median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    println!(
        "ratio: {:.2}x helm template alone",
        t.as_secs_f64() / a.as_secs_f64()
    );
}
