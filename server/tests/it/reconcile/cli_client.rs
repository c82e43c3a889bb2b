//! The `tidemark` CLI client against a running server on a sandbox: every command, its JSON
//! and table output, and the exit codes a pipeline relies on (0 done, 2 wait timed out,
//! 3 unhealthy, 4 refused).

use std::time::Duration;

use serde_json::Value;

use super::{fixture_approvals, needs_approvals};

struct Cli {
    base: String,
    token: String,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Cli {
    /// `tidemark <args>` with the server and token in the environment.
    async fn run(&self, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(args)
            .env("TIDEMARK_SERVER", &self.base)
            .env("TIDEMARK_TOKEN", &self.token)
            .env("RUST_LOG", "off")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "tidemark {args:?}: {}{}", r.stdout, r.stderr);
        r
    }

    /// Polls `tidemark -o json <args>` until `done` holds (30 s).
    async fn until(&self, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..150 {
            let r = self.run(args).await;
            if r.code == 0 {
                last = r.json();
                if done(&last) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("tidemark {args:?} never satisfied the condition; last: {last}");
    }
}

fn pending(v: &Value) -> Option<i64> {
    v["items"]
        .as_array()?
        .iter()
        .find(|r| r["status"] == "pending")
        .and_then(|r| r["id"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_every_action_with_documented_exit_codes() {
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, needs_approvals(1)).await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let admin = Cli {
        base: server.base.clone(),
        token: server.token(app::model::Role::Admin, None).await,
    };
    let viewer = Cli {
        base: server.base.clone(),
        token: server.token(app::model::Role::Viewer, None).await,
    };

    // list / get: JSON, YAML and a table.
    let list = admin.ok(&["app", "list", "-o", "json"]).await.json();
    assert_eq!(list[0]["name"], "guestbook", "{list}");
    let table = admin.ok(&["app", "list"]).await.stdout;
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{table}");
    assert!(lines.next().unwrap().starts_with("guestbook"), "{table}");
    let yaml = admin
        .ok(&["app", "get", "guestbook", "-o", "yaml"])
        .await
        .stdout;
    assert!(yaml.contains("name: guestbook"), "{yaml}");
    let missing = admin.run(&["app", "get", "nope"]).await;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert_eq!(
        missing.stderr.trim(),
        "error: not found: application nope (HTTP 404)"
    );

    // A sync needing an approval is refused (4) with the server's message; a dry run is not.
    let refused = admin.run(&["app", "sync", "guestbook"]).await;
    assert_eq!(refused.code, 4, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("approval"), "{}", refused.stderr);
    let preview = admin
        .ok(&["app", "sync", "guestbook", "--dry-run", "-o", "json"])
        .await
        .json();
    assert_eq!(preview["dry_run"], true);
    let diff = admin
        .ok(&["app", "diff", "guestbook", "-o", "json"])
        .await
        .json();
    assert!(
        diff["resources"].as_array().is_some_and(|r| !r.is_empty()),
        "{diff}"
    );

    // A viewer is refused every action: 4.
    for args in [
        &["app", "sync", "guestbook"][..],
        &["app", "refresh", "guestbook"],
        &["app", "approve", "guestbook", "--request", "1"],
        &["app", "unpin", "guestbook"],
    ] {
        let r = viewer.run(args).await;
        assert_eq!(r.code, 4, "viewer {args:?}: {}{}", r.stdout, r.stderr);
    }
    assert_eq!(viewer.run(&["app", "list"]).await.code, 0);

    // The engine opens a request; approving it (one approval needed) syncs; wait until healthy.
    admin
        .until(
            &["request", "list", "--app", "guestbook", "-o", "json"],
            |v| pending(v).is_some(),
        )
        .await;
    admin.ok(&["app", "approve", "guestbook"]).await;
    let waited = admin
        .ok(&[
            "app",
            "wait",
            "guestbook",
            "--synced",
            "--healthy",
            "--timeout",
            "60s",
            "--interval",
            "500ms",
            "-o",
            "json",
        ])
        .await
        .json();
    let deployed = waited["status"]["deployed_revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = admin
        .ok(&["app", "history", "guestbook", "-o", "json", "--limit", "50"])
        .await
        .json();
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "approval"
                || e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("approved"))),
        "{history}"
    );

    // A revision that never comes: wait times out (2).
    let timed_out = admin
        .run(&[
            "app",
            "wait",
            "guestbook",
            "--revision",
            "0000000",
            "--timeout",
            "2s",
            "--interval",
            "500ms",
        ])
        .await;
    assert_eq!(timed_out.code, 2, "{}", timed_out.stderr);
    assert!(
        timed_out.stderr.contains("timed out"),
        "{}",
        timed_out.stderr
    );

    // A new commit: refresh, then reject its request with a reason.
    f.repo.write(
        "apps/guestbook/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: slow}\n",
    );
    f.repo.commit("slow mode");
    admin.ok(&["app", "refresh", "guestbook"]).await;
    admin
        .until(
            &["request", "list", "--app", "guestbook", "-o", "json"],
            |v| pending(v).is_some(),
        )
        .await;
    let rejected = admin
        .ok(&[
            "app",
            "reject",
            "guestbook",
            "--reason",
            "not during the freeze",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(
        admin
            .run(&["app", "reject", "guestbook", "--reason", "x"])
            .await
            .code,
        1
    );

    // Rollback to the known-good revision pins it; unpin follows Git again.
    admin
        .ok(&[
            "app",
            "rollback",
            "guestbook",
            "--to",
            &deployed[..7],
            "--reason",
            "back to known good",
        ])
        .await;
    let got = admin
        .ok(&["app", "get", "guestbook", "-o", "json"])
        .await
        .json();
    assert_eq!(got["pinned"]["revision"], deployed.as_str(), "{got}");
    let bogus = admin
        .run(&[
            "app",
            "rollback",
            "guestbook",
            "--to",
            "deadbeef",
            "--reason",
            "x",
        ])
        .await;
    assert_ne!(bogus.code, 0);
    admin.ok(&["app", "unpin", "guestbook"]).await;
    let got = admin
        .ok(&["app", "get", "guestbook", "-o", "json"])
        .await
        .json();
    assert!(got["pinned"].is_null(), "{got}");

    // A broken image, approved and synced: Degraded once synced → wait --healthy exits 3.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &super::app_in(&f.ns).replace("nginx:1.27", "nginx:broken"),
    );
    let broken = f.repo.commit("broken image");
    admin.ok(&["app", "refresh", "guestbook"]).await;
    // Unpinned, the rejected revision may be asked for again first: approve the broken one.
    let open = admin
        .until(
            &[
                "request",
                "list",
                "--app",
                "guestbook",
                "--status",
                "pending",
                "-o",
                "json",
            ],
            |v| {
                v["items"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|r| r["revision"] == broken.as_str()))
            },
        )
        .await;
    let id = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == broken.as_str())
        .unwrap()["id"]
        .to_string();
    admin
        .ok(&["app", "approve", "guestbook", "--request", &id])
        .await;
    let unhealthy = admin
        .run(&[
            "app",
            "wait",
            "guestbook",
            "--synced",
            "--healthy",
            "--timeout",
            "90s",
            "--interval",
            "500ms",
        ])
        .await;
    assert_eq!(
        unhealthy.code, 3,
        "{}{}",
        unhealthy.stdout, unhealthy.stderr
    );
    assert!(
        unhealthy.stderr.contains("Degraded"),
        "{}",
        unhealthy.stderr
    );

    // The audit ledger: list, export (CSV, every page) and the server's verification.
    let rows = admin
        .ok(&["audit", "list", "--app", "guestbook", "-o", "json"])
        .await
        .json();
    assert!(
        rows["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "sync_request_reject"
                || r["details"]["reason"] == "not during the freeze"),
        "{rows}"
    );
    let csv = admin
        .ok(&["audit", "export", "--format", "csv"])
        .await
        .stdout;
    assert!(csv.starts_with("seq,"), "{csv}");
    assert_eq!(csv.matches("\nseq,").count(), 0, "one header");
    assert!(csv.lines().count() > 5, "{csv}");
    let jsonl = admin.ok(&["audit", "export"]).await.stdout;
    assert!(jsonl
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    let verified = admin
        .ok(&["audit", "verify", "--remote", "-o", "json"])
        .await
        .json();
    assert!(verified["first_bad"].is_null(), "{verified}");

    // Usage errors are 64; no server is usage too; a dead server is 1.
    assert_eq!(admin.run(&["app", "lst"]).await.code, 64);
    let dead = Cli {
        base: "http://127.0.0.1:9".into(),
        token: admin.token.clone(),
    };
    let r = dead.run(&["app", "list"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: cannot reach http://127.0.0.1:9"),
        "{}",
        r.stderr
    );
    f.close().await;
}
