//! Verified commit signatures end to end: keys made in the test (`gpg --batch`, `ssh-keygen`),
//! commits signed by the real `git`, verdicts from Debian's `gpgv` / `ssh-keygen -Y`, the
//! `require_signed` deploy policy on the sandbox, key rotation, four-eyes by the verified
//! signer, and what the REST API and the application page show.

use std::path::{Path, PathBuf};
use std::process::Command;

use app::model::{SignatureStatus, SignatureVerdict, SyncPolicy};
use serde_json::{json, Value};
use server::config::ApplicationSettings;
use server::git::sources::GitSources;
use server::reconcile;
use server::store::DeclaredCatalog;

use crate::reconcile::{fixture_approvals_on, fixture_with, needs_approvals, Fixture};

/// Signing identities made for one test: OpenPGP keys in their own GnuPG home (used through a
/// `gpg.program` wrapper, so nothing lands in the repository or the user's home) and SSH keys.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        // Short path: gpg-agent's socket lives in the GnuPG home.
        let dir = tempfile::Builder::new()
            .prefix("tm-keys")
            .tempdir_in("/tmp")
            .unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let wrapper = dir.path().join("gpg.sh");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nGNUPGHOME={} exec gpg \"$@\"\n", home.display()),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Self { dir }
    }

    fn gpg(&self, args: &[&str]) -> String {
        let out = Command::new(self.dir.path().join("gpg.sh"))
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new OpenPGP signing key for `uid`: its fingerprint and the path of its armored export.
    fn openpgp(&self, uid: &str, email: &str) -> (String, PathBuf) {
        self.gpg(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        let listing = self.gpg(&["--with-colons", "--list-keys", email]);
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned();
        let export = self.dir.path().join(format!("{email}.asc"));
        std::fs::write(&export, self.gpg(&["--armor", "--export", email])).unwrap();
        (fpr, export)
    }

    /// A new SSH key named `name`: the public key path and its `allowed_signers` line for
    /// `principal`.
    fn ssh(&self, name: &str, principal: &str) -> (PathBuf, String) {
        let key = self.dir.path().join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
        let public = key.with_extension("pub");
        let line = format!(
            "{principal} {}",
            std::fs::read_to_string(&public).unwrap().trim()
        );
        (public, line)
    }

    fn wrapper(&self) -> String {
        self.dir.path().join("gpg.sh").display().to_string()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.dir.path().join("gnupg"))
            .status();
    }
}

/// How a test commit is signed.
enum Sign<'a> {
    OpenPgp(&'a str),
    Ssh(&'a Path),
}

/// Commits everything in the work tree, signed as `sign`, optionally with another author line.
fn commit_signed(
    f: &Fixture,
    keys: &Keys,
    message: &str,
    sign: Sign<'_>,
    author: Option<&str>,
) -> String {
    f.repo.git(&["add", "-A"]);
    let program = format!("gpg.program={}", keys.wrapper());
    let mut args: Vec<String> = vec!["-c".into(), program];
    match sign {
        Sign::OpenPgp(fpr) => {
            args.extend(["-c".into(), format!("user.signingkey={fpr}")]);
        }
        Sign::Ssh(public) => {
            args.extend([
                "-c".into(),
                "gpg.format=ssh".into(),
                "-c".into(),
                format!("user.signingkey={}", public.display()),
            ]);
        }
    }
    args.extend([
        "commit".into(),
        "-q".into(),
        "-S".into(),
        "-m".into(),
        message.into(),
    ]);
    if let Some(author) = author {
        args.push(format!("--author={author}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    f.repo.git(&refs);
    f.repo.git(&["rev-parse", "HEAD"])
}

/// A change to guestbook's ConfigMap (each commit touches the application's path).
fn change(f: &Fixture, value: &str) {
    f.repo.write(
        "apps/guestbook/extra.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: {value}}}\n"),
    );
}

/// Re-declares the fixture's catalog after `edit` (trusted keys, policy) and starts a new Git
/// engine on it, as a restart with the edited configuration does.
async fn reconfigure(f: &mut Fixture, edit: impl FnOnce(&mut server::config::Settings)) {
    edit(&mut f.settings);
    let catalog = DeclaredCatalog {
        repositories: &f.settings.repositories,
        clusters: &f.settings.clusters,
        applications: &f.settings.applications,
    };
    f.store.sync_declared(catalog, 0).await.unwrap();
    f.store
        .sync_project_policies(&f.settings.projects)
        .await
        .unwrap();
    f.git = GitSources::new(f.store.clone(), &f.settings);
    f.git.check_trusted_keys(&f.settings).unwrap();
}

async fn verdict(f: &Fixture, app: &str, sha: &str) -> SignatureVerdict {
    f.store
        .revision_signature(app, sha)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no verdict on {sha}"))
}

#[tokio::test]
async fn verdicts_never_trust_the_author_line() {
    let keys = Keys::new();
    let (alice_fpr, alice_key) = keys.openpgp("Alice <alice@example.com>", "alice@example.com");
    let (mallory_fpr, _) = keys.openpgp("Mallory <mallory@example.com>", "mallory@example.com");
    let (bob_pub, bob_line) = keys.ssh("bob", "bob@example.com");
    let (carol_pub, _) = keys.ssh("carol", "carol@example.com");
    let mut f = fixture_with(SyncPolicy::Manual, false).await;
    // Alice's key as a file, Bob's allowed_signers line inline; Mallory and Carol are unknown.
    reconfigure(&mut f, |s| {
        s.repositories[0].trusted_keys = vec![alice_key.display().to_string(), bob_line.clone()];
    })
    .await;
    let unsigned = f.repo.git(&["rev-parse", "HEAD"]);

    change(&f, "alice");
    let by_alice = commit_signed(&f, &keys, "alice's change", Sign::OpenPgp(&alice_fpr), None);
    change(&f, "mallory");
    let by_mallory = commit_signed(
        &f,
        &keys,
        "mallory's change",
        Sign::OpenPgp(&mallory_fpr),
        None,
    );
    // The author line says Alice; Bob's key signed it.
    change(&f, "forged");
    let forged = commit_signed(
        &f,
        &keys,
        "looks like alice's",
        Sign::Ssh(&bob_pub),
        Some("Alice <alice@example.com>"),
    );
    change(&f, "carol");
    let by_carol = commit_signed(&f, &keys, "carol's change", Sign::Ssh(&carol_pub), None);
    // Alice signs; then the commit's message is edited after signing, the signature kept.
    change(&f, "tampered");
    let signed = commit_signed(
        &f,
        &keys,
        "harmless change",
        Sign::OpenPgp(&alice_fpr),
        None,
    );
    let raw = f.repo.git(&["cat-file", "commit", &signed]);
    let edited = raw.replace("harmless change", "harmless change; also open port 22");
    std::fs::write(f.repo.path().join(".git/tampered"), format!("{edited}\n")).unwrap();
    let tampered = f
        .repo
        .git(&["hash-object", "-t", "commit", "-w", ".git/tampered"]);
    f.repo.git(&["update-ref", "refs/heads/main", &tampered]);
    f.git.sync_repository("demo").await.unwrap();

    let v = verdict(&f, "guestbook", &unsigned).await;
    assert_eq!(v.status, SignatureStatus::Unsigned);
    let v = verdict(&f, "guestbook", &by_alice).await;
    assert_eq!(v.status, SignatureStatus::Verified, "{v:?}");
    assert_eq!(v.signer.as_deref(), Some("Alice <alice@example.com>"));
    assert_eq!(v.fingerprint.as_deref(), Some(alice_fpr.as_str()));
    assert_eq!(v.method.as_deref(), Some("openpgp"));
    let v = verdict(&f, "guestbook", &by_mallory).await;
    assert_eq!(v.status, SignatureStatus::UnknownKey, "{v:?}");
    assert_eq!(v.fingerprint.as_deref(), Some(mallory_fpr.as_str()));
    assert_eq!(v.signer, None);
    let v = verdict(&f, "guestbook", &forged).await;
    assert_eq!(v.status, SignatureStatus::Verified, "{v:?}");
    assert_eq!(
        v.signer.as_deref(),
        Some("bob@example.com"),
        "the signer, not the author line"
    );
    assert!(v.fingerprint.as_deref().unwrap().starts_with("SHA256:"));
    assert_eq!(
        verdict(&f, "guestbook", &by_carol).await.status,
        SignatureStatus::UnknownKey
    );
    let v = verdict(&f, "guestbook", &tampered).await;
    assert_eq!(v.status, SignatureStatus::BadSignature, "{v:?}");

    // The commit list says the same over REST.
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let body: Value = server
        .get("/api/v1/applications/guestbook/commits")
        .await
        .json()
        .await
        .unwrap();
    let status_of = |sha: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["sha"] == sha)
            .map(|c| c["signature"]["status"].clone())
    };
    assert_eq!(status_of(&forged), Some(json!("verified")), "{body}");
    assert_eq!(status_of(&tampered), Some(json!("bad_signature")));
    assert_eq!(status_of(&unsigned), Some(json!("unsigned")));
    // The timeline (the page's commit list) shows badges with the signer.
    let page = server
        .get("/applications/guestbook?group=commits")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"data-signature="bad_signature""#),
        "no badge on the timeline"
    );
    assert!(page.contains("bob@example.com"), "the signer is named");

    // A signed annotated tag vouches for the (unsigned) commit it points at, for an
    // application that follows the tag.
    f.repo.git(&[
        "-c",
        &format!("gpg.program={}", keys.wrapper()),
        "tag",
        "-s",
        "-u",
        &alice_fpr,
        "-m",
        "release 1",
        "v1",
        &unsigned,
    ]);
    reconfigure(&mut f, |s| {
        let mut tagged: ApplicationSettings = s.applications[0].clone();
        tagged.name = "tagged".into();
        tagged.revision = "v1".into();
        s.applications.push(tagged);
    })
    .await;
    f.git.sync_repository("demo").await.unwrap();
    let v = verdict(&f, "tagged", &unsigned).await;
    assert_eq!(v.status, SignatureStatus::Verified, "{v:?}");
    assert_eq!(v.via.as_deref(), Some("tag v1"));

    // A trusted tag named like the branch (`refs/tags/main`) vouches for nothing on the
    // branch: the branch wins the name, and a tag vouches only for the commit it points at.
    f.repo.git(&[
        "-c",
        &format!("gpg.program={}", keys.wrapper()),
        "tag",
        "-s",
        "-u",
        &alice_fpr,
        "-m",
        "not the branch",
        "main",
        &by_alice,
    ]);
    f.git.sync_repository("demo").await.unwrap();
    let v = verdict(&f, "guestbook", &tampered).await;
    assert_eq!(v.status, SignatureStatus::BadSignature, "{v:?}");
    f.close().await;
}

#[tokio::test]
async fn require_signed_deploys_only_verified_revisions_and_keeps_history_on_rotation() {
    let keys = Keys::new();
    let (alice_fpr, alice_key) = keys.openpgp("Alice <alice@example.com>", "alice@example.com");
    let mut f = fixture_with(SyncPolicy::Auto, true).await;
    reconfigure(&mut f, |s| {
        s.repositories[0].trusted_keys = vec![alice_key.display().to_string()];
        s.projects = vec![server::config::ProjectSettings {
            name: "demo".into(),
            require_signed: true,
            ..Default::default()
        }];
    })
    .await;
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    assert!(app.require_signed, "the project's policy applies");

    // The fixture's first commit is unsigned: nothing is applied, the reason is recorded once
    // and notifies.
    let unsigned = f.repo.git(&["rev-parse", "HEAD"]);
    for _ in 0..2 {
        let out = reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        assert_eq!(out.synced, None);
    }
    assert!(f.store.syncs("guestbook", 5).await.unwrap().is_empty());
    let events = f.store.timeline("guestbook", 50).await.unwrap();
    let blocked: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "revision_blocked")
        .collect();
    assert_eq!(blocked.len(), 1, "{events:?}");
    assert!(
        blocked[0].1.contains(&unsigned[..7]) && blocked[0].1.contains("unsigned"),
        "{}",
        blocked[0].1
    );
    let outbox = f.store.unrouted_notifications(100).await.unwrap();
    assert!(
        outbox.iter().any(|n| n.trigger == "revision_blocked"),
        "notified"
    );
    // A direct sync is refused too, with the reason.
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let refused = reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &server::store::Actor::system(),
    )
    .await;
    assert!(
        matches!(&refused, Err(reconcile::ReconcileError::Unverified(m)) if m.contains("not deployed")),
        "{refused:?}"
    );

    // Alice signs a change: deployed, with the verdict kept on the sync and its audit row.
    change(&f, "signed");
    let signed = commit_signed(&f, &keys, "signed change", Sign::OpenPgp(&alice_fpr), None);
    f.git.sync_repository("demo").await.unwrap();
    let out = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (sync_id, _) = out.synced.expect("the verified revision is synced");
    let at_deploy = f.store.sync_signature(sync_id).await.unwrap().unwrap();
    assert_eq!(at_deploy.status, SignatureStatus::Verified);
    let (audit, _) = f
        .store
        .audit_page(&Default::default(), None, 100)
        .await
        .unwrap();
    assert!(
        audit.iter().any(|r| r.event.action == "sync"
            && r.event.details["signature"]["signer"] == "Alice <alice@example.com>"),
        "the sync's audit row names the signer"
    );

    // An unsigned commit on top: held back, the signed revision stays deployed.
    change(&f, "unsigned-again");
    let later = f.repo.commit("unsigned change");
    f.git.sync_repository("demo").await.unwrap();
    let out = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(out.synced, None);
    let status = f.store.app_status("guestbook").await.unwrap().unwrap();
    assert_eq!(status.deployed_sha.as_deref(), Some(signed.as_str()));
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let detail: Value = server
        .get("/api/v1/applications/guestbook")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["require_signed"], true);
    assert_eq!(detail["target_signature"]["status"], "unsigned", "{detail}");
    assert!(
        detail["held_back"].as_str().unwrap().contains(&later[..7]),
        "{detail}"
    );
    let page = server
        .get("/applications/guestbook")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"data-testid="held-back""#),
        "the page says why"
    );

    // Rotation: Alice's key is no longer trusted. Pending revisions are checked again; the
    // deployed sync keeps the verdict it was deployed under.
    drop(server);
    reconfigure(&mut f, |s| s.repositories[0].trusted_keys = Vec::new()).await;
    f.git.sync_repository("demo").await.unwrap();
    assert_eq!(
        verdict(&f, "guestbook", &signed).await.status,
        SignatureStatus::UnknownKey
    );
    assert_eq!(
        f.store
            .sync_signature(sync_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SignatureStatus::Verified,
        "history keeps its verdict"
    );
    let events = f.store.timeline("guestbook", 50).await.unwrap();
    assert!(
        events.iter().any(|e| e.0 == "trusted_keys_changed"),
        "{events:?}"
    );
    let (server, clients) = crate::reconcile::approvers(&f).await;
    let rollback = clients["alice"]
        .post(format!(
            "{}/api/v1/applications/guestbook/rollback",
            server.base
        ))
        .header("Origin", &server.base)
        .json(&json!({"revision": signed, "reason": "back to alice's"}))
        .send()
        .await
        .unwrap();
    // The revision deployed under Alice's verified signature stays deployable: the rollback
    // to it works (history keeps its verdict), while the unsigned target stays held back.
    let done: Value = rollback.json().await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let detail: Value = clients["alice"]
        .get(format!("{}/api/v1/applications/guestbook", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["pinned"]["revision"], signed.as_str());
    assert_eq!(detail["held_back"], Value::Null, "{detail}");
    drop(server);
    f.close().await;
}

#[tokio::test]
async fn four_eyes_uses_the_verified_signer_not_the_author_line() {
    let keys = Keys::new();
    let (bob_pub, bob_line) = keys.ssh("bob", "bob@example.com");
    // On PostgreSQL (the other tests of this file run on SQLite).
    let mut f = fixture_approvals_on(
        crate::helpers::TestDb::postgres().await,
        SyncPolicy::Manual,
        false,
        needs_approvals(1),
    )
    .await;
    reconfigure(&mut f, |s| {
        s.repositories[0].trusted_keys = vec![bob_line.clone()]
    })
    .await;
    // Authored as ada@example.com (the fixture's author line), signed by Bob's key.
    change(&f, "bob");
    let sha = commit_signed(
        &f,
        &keys,
        "bob's change under ada's name",
        Sign::Ssh(&bob_pub),
        None,
    );
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let events = f.store.timeline("guestbook", 20).await.unwrap();
    let requested = events.iter().find(|e| e.0 == "sync_requested").unwrap();
    assert!(
        requested
            .1
            .contains(&format!("deploys {}, signed by bob@example.com", &sha[..7])),
        "{}",
        requested.1
    );
    let (server, clients) = crate::reconcile::approvers(&f).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.db_url).await.unwrap();
    sqlx::query("UPDATE users SET email = 'bob@example.com' WHERE id = 'local:bob'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let id = f
        .store
        .sync_requests(None, Some("guestbook"), None, 1)
        .await
        .unwrap()[0]
        .id;
    let approve = |who: &'static str| {
        clients[who]
            .post(format!("{}/api/v1/sync-requests/{id}/approve", server.base))
            .header("Origin", &server.base)
            .send()
    };
    let refused = approve("bob").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("you signed commit"));
    // Ada's name is on the author line, but she did not make the change: she may approve.
    let ok = approve("ada").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.text().await.unwrap());
    drop(server);
    f.close().await;
}
