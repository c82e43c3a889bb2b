//! The `tidemark` binary as an operator meets it: exit codes and one-line errors.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::TestDb;

fn tidemark(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got: {stderr}"
    );
    stderr
}

#[test]
fn help_lists_the_subcommands() {
    let (out, _) = tidemark(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve") && text.contains("migrate"), "{text}");
}

#[test]
fn a_malformed_database_url_exits_non_zero_with_one_readable_line() {
    let (out, took) = tidemark(
        &["serve"],
        &[("TIDEMARK__DATABASE__URL", "mysql://root:hunter2@db/x")],
    );
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(line.contains("unsupported scheme `mysql`"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(took < Duration::from_secs(10));
}

#[test]
fn an_unreachable_postgres_exits_non_zero_within_ten_seconds() {
    // Port 9 (discard) is closed on these machines: the connection is refused.
    let (out, took) = tidemark(
        &["migrate"],
        &[(
            "TIDEMARK__DATABASE__URL",
            "postgres://tidemark:pw@127.0.0.1:9/tidemark",
        )],
    );
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(
        line.contains("cannot open database postgres://tidemark:***@127.0.0.1:9/tidemark"),
        "{line}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidemark.toml");
    std::fs::write(&file, "[server]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let (out, _) = tidemark(&["--config", file.to_str().unwrap(), "migrate"], &[]);
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(line.contains("server.lisen"), "{line}");
}

#[test]
fn migrate_twice_on_the_same_sqlite_file_succeeds() {
    let db = TestDb::sqlite();
    for _ in 0..2 {
        let (out, _) = tidemark(
            &["migrate"],
            &[("TIDEMARK__DATABASE__URL", db.url.as_str())],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn tokens_and_local_accounts_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let env = [("TIDEMARK__DATABASE__URL", url.as_str())];
    let (out, _) = tidemark(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "deployer",
            "--project",
            "web",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap();
    assert!(
        secret.trim().starts_with("tdm_"),
        "only the token on stdout: {secret}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));

    let (again, _) = tidemark(
        &["token", "create", "--name", "ci", "--role", "admin"],
        &env,
    );
    assert!(!again.status.success());
    assert!(one_line_error(&again).contains("already exists"));
    let (bad_role, _) = tidemark(&["token", "create", "--name", "x", "--role", "root"], &env);
    assert!(!bad_role.status.success());

    let (list, _) = tidemark(&["token", "list"], &env);
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.starts_with("ci\tdeployer\tweb\tlast used never"),
        "{listed}"
    );
    assert!(!listed.contains(secret.trim()));

    let (revoke, _) = tidemark(&["token", "revoke", "ci"], &env);
    assert!(revoke.status.success());
    let (twice, _) = tidemark(&["token", "revoke", "ci"], &env);
    assert!(one_line_error(&twice).contains("no live token is named `ci`"));

    let (user, _) = tidemark(
        &["user", "add", "deployer1", "--display-name", "Dee Ployer"],
        &env,
    );
    assert!(user.status.success());
    let printed = String::from_utf8(user.stdout).unwrap();
    assert!(printed.contains("Password (shown once): "), "{printed}");
    let (bad, _) = tidemark(&["user", "add", "../x"], &env);
    assert!(one_line_error(&bad).contains("must be letters"));
}
