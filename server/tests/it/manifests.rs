//! Manifests read as kubectl reads them, and what a render may see (issue 18, items 4, 7, 8
//! and 9): YAML 1.1 plain scalars (`defaultMode: 0400` is 256), an object without a namespace
//! and the same one in the application's namespace as a duplicate, Kustomize limits applied to
//! what the application's kustomization reads, and no noise from an equal Secret value or from
//! a new branch tip that renders the same objects. Repositories are made with the real `git`
//! CLI; kubectl and Kustomize are the real ones.

use std::process::Command;

use serde_json::{json, Value};
use server::reconcile;
use server::render::{self, Limits, RenderError};

use crate::git::GitRepo;
use crate::reconcile::{approvers, decide, fixture_approvals, fixture_with};

fn render_ns(
    repo: &GitRepo,
    path: &str,
    namespace: &str,
    limits: &Limits,
) -> Result<render::Rendered, RenderError> {
    let r = git2::Repository::open(repo.path()).unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap().id();
    render::render(&r, head, path, namespace, limits)
}

fn object<'a>(r: &'a render::Rendered, kind: &str, name: &str) -> &'a Value {
    r.objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {}", r.canonical))
}

// ---- 4. YAML 1.1 scalars ------------------------------------------------------------------

const SECRET_VOLUME: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  \
annotations: {mode: '0400', quoted: \"yes\"}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  \
template:\n    metadata: {labels: {app: web}}\n    spec:\n      automountServiceAccountToken: no\n      \
containers: [{name: web, image: 'nginx:1.27', stdin: yes, tty: off}]\n      volumes:\n      \
- name: creds\n        secret:\n          secretName: creds\n          defaultMode: 0400\n      \
- name: conf\n        configMap:\n          name: conf\n          defaultMode: 0644\n          \
items: [{key: a, path: a.conf, mode: 0o600}, {key: b, path: b.conf, mode: 0x1A4}]\n";

/// The example: `defaultMode: 0400` is octal 256 (`r--------`), as kubectl applies it,
/// never decimal 400 (`0o620`, group-writable); quoted scalars stay strings. The same in a plain
/// application and through Kustomize (whose own reader already writes 256).
#[test]
fn file_modes_and_yaml_1_1_booleans_are_read_as_kubectl_reads_them() {
    let repo = GitRepo::new();
    repo.write("apps/plain/deploy.yaml", SECRET_VOLUME)
        .write("apps/kust/deploy.yaml", SECRET_VOLUME)
        .write("apps/kust/kustomization.yaml", "resources: [deploy.yaml]\n");
    repo.commit("modes");
    for path in ["apps/plain", "apps/kust"] {
        let r = render_ns(&repo, path, "shop", &Limits::default()).unwrap();
        let d = object(&r, "Deployment", "web");
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 256, "{path}");
        assert_eq!(
            spec["volumes"][1]["configMap"]["defaultMode"], 420,
            "{path}"
        );
        assert_eq!(
            spec["volumes"][1]["configMap"]["items"],
            json!([{"key": "a", "path": "a.conf", "mode": 384}, {"key": "b", "path": "b.conf", "mode": 420}]),
            "{path}"
        );
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"mode": "0400", "quoted": "yes"}),
            "{path}"
        );
        if path == "apps/plain" {
            // Kustomize reads YAML 1.2 itself and writes `"yes"` quoted: `kubectl apply -k` sends
            // a string there, `kubectl apply -f` a boolean.
            assert_eq!(spec["automountServiceAccountToken"], false);
            assert_eq!(spec["containers"][0]["stdin"], true);
            assert_eq!(spec["containers"][0]["tty"], false);
        }
    }
}

/// Plain scalars of every YAML 1.1 form, values and keys, read by Tidemark and by the real
/// kubectl (`kubectl label --local -o json`, which decodes files as `kubectl apply -f` does):
/// the same objects, numbers compared by value.
#[test]
fn plain_scalars_match_what_kubectl_reads() {
    let text = "apiVersion: example.com/v1\nkind: Thing\nmetadata:\n  name: x\n  namespace: shop\n\
spec:\n  octal: 0400\n  octal2: 0644\n  neg: -0644\n  plus: +0644\n  o: 0o17\n  O: 0O17\n  hex: 0x1F\n  \
HEX: 0X1f\n  nhex: -0x1F\n  bin: 0b1010\n  nbin: -0b101\n  odd: 0b+101\n  under: 1_000\n  uoct: 0_10\n  \
sign: +12\n  zero: 0\n  eight: 08\n  f1: 09.5\n  f2: 1.0\n  f3: 1.\n  f4: 1e3\n  f5: 1.5\n  f6: +.5\n  \
f7: .5\n  f8: .5_5\n  f9: 1e-7\n  f10: 100000.0\n  max: 9223372036854775807\n  min: -9223372036854775808\n  \
big: 9223372036854775808\n  huge: 18446744073709551615\n  t1: yes\n  t2: Yes\n  t3: YES\n  t4: Y\n  \
t5: on\n  t6: On\n  t7: ON\n  t8: True\n  t9: TRUE\n  f_1: no\n  f_2: No\n  f_3: NO\n  f_4: N\n  \
f_5: off\n  f_6: Off\n  f_7: OFF\n  f_8: False\n  nul1: ~\n  nul2: null\n  nul3: Null\n  nul4: NULL\n  \
nul5:\n  s1: yES\n  s2: nil\n  s3: 0x\n  s4: 0o8\n  s5: 1:30\n  s6: 2001-12-14\n  s7: 1e400\n  s8: ._5\n  \
s9: 1.2.3\n  s10: 12Mi\n  q1: '0400'\n  q2: \"yes\"\n  q3: !!str 0644\n  q4: |\n    0400\n  q5: !custom 0400\n  \
t_1: !!int \"0x10\"\n  t_2: !!float 3\n  t_3: !!bool \"on\"\n  t_4: !!binary aGk=\n  \
y: key-y\n  n: key-n\n  0x10: hex-key\n  1.5: float-key\n  1e6: exp-key\n  \
0.00001: small-key\n  123456789.0: f32-key\n  100000.0: round-key\n  ~x: tilde-key\n  \
base: &base {mode: 0644, keep: yes}\n  merged:\n    <<: *base\n    keep: no\n  early: {keep: no, <<: *base}\n  \
list: {mode: mine, <<: [{mode: first}, {mode: second, other: 1}]}\n";
    let ours = render::read_manifests(text, "thing.yaml", &Limits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thing.yaml");
    std::fs::write(&file, text).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .args(["label", "--local", "-o", "json", "tidemark-probe=1", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    theirs["metadata"].as_object_mut().unwrap().remove("labels");
    assert_same(&ours.objects[0], &theirs, "");
    // A few spelled out, for the reader.
    let spec = &ours.objects[0]["spec"];
    assert_eq!(
        (
            &spec["octal"],
            &spec["hex"],
            &spec["t1"],
            &spec["s1"],
            &spec["q1"]
        ),
        (
            &json!(256),
            &json!(31),
            &json!(true),
            &json!("yES"),
            &json!("0400")
        )
    );
    assert_eq!(spec["true"], "key-y");
    assert_eq!(spec["16"], "hex-key");
    assert_eq!(spec["1e+06"], "exp-key");

    // Texts kubectl refuses are refused, naming the file.
    for bad in ["a: {~: x}", "a: {null: x}", "a: .inf", "a: {[1]: x}"] {
        let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {bad}\n");
        let err = render::read_manifests(&text, "bad.yaml", &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, RenderError::Yaml { file, .. } if file == "bad.yaml"),
            "{bad}: {err}"
        );
    }
}

/// Equal JSON, numbers by value (kubectl writes `1e20` as `100000000000000000000`).
fn assert_same(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{at}: {a} vs kubectl's {b}")
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys = |m: &serde_json::Map<String, Value>| {
                m.keys().cloned().collect::<std::collections::BTreeSet<_>>()
            };
            assert_eq!(keys(a), keys(b), "{at}: keys");
            for (k, v) in a {
                assert_same(v, &b[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(ours, theirs, "{at}"),
    }
}

// ---- 7. Duplicates after namespace defaulting ---------------------------------------------

fn cm(name: &str, namespace: Option<&str>, value: &str) -> String {
    let ns = namespace.map_or(String::new(), |n| format!(", namespace: {n}"));
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}{ns}}}\ndata: {{v: '{value}'}}\n"
    )
}

/// `a.yaml` declares ConfigMap `dup` without a namespace, `b.yaml` the same in the
/// application's namespace: one object defined twice, a render error naming both files (it
/// was applied twice and never in sync). The same for a `List` item, for Kustomize output, and
/// for cluster-scoped kinds; objects in another namespace stay distinct, and the objects keep
/// the namespace as written.
#[test]
fn an_object_without_a_namespace_and_the_same_in_the_applications_namespace_is_a_duplicate() {
    let repo = GitRepo::new();
    repo.write("apps/x/a.yaml", &cm("dup", None, "1"))
        .write("apps/x/b.yaml", &cm("dup", Some("shop"), "2"));
    repo.commit("dup");
    let err = render_ns(&repo, "apps/x", "shop", &Limits::default()).unwrap_err();
    match &err {
        RenderError::Duplicate {
            object,
            first,
            second,
        } => {
            assert_eq!(object, "ConfigMap shop/dup");
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("apps/x/a.yaml#1", "apps/x/b.yaml#1")
            );
        }
        other => panic!("{other}"),
    }
    // In another application namespace they are two objects, kept as written.
    let r = render_ns(&repo, "apps/x", "web", &Limits::default()).unwrap();
    assert_eq!(r.objects.len(), 2);
    assert!(r
        .objects
        .iter()
        .any(|o| o["metadata"].get("namespace").is_none()));
    let again = render_ns(&repo, "apps/x", "elsewhere", &Limits::default()).unwrap();
    assert_eq!(
        r.digest, again.digest,
        "the digest does not depend on the namespace"
    );

    // A `List` item without a namespace against a document in the namespace.
    let repo = GitRepo::new();
    repo.write(
        "apps/x/list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: dup2}\n  data: {v: '1'}\n",
    )
    .write("apps/x/z.yaml", &cm("dup2", Some("shop"), "2"));
    repo.commit("list");
    let err = render_ns(&repo, "apps/x", "shop", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Duplicate { first, second, .. }
            if first == "apps/x/list.yaml#1" && second == "apps/x/z.yaml#1"),
        "{err}"
    );

    // Kustomize output goes through the same check.
    let repo = GitRepo::new();
    repo.write("apps/k/a.yaml", &cm("dup", None, "1"))
        .write("apps/k/b.yaml", &cm("dup", Some("shop"), "2"))
        .write("apps/k/kustomization.yaml", "resources: [a.yaml, b.yaml]\n");
    repo.commit("kustomize dup");
    let err = render_ns(&repo, "apps/k", "shop", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Duplicate { object, first, second }
            if object == "ConfigMap shop/dup" && first.starts_with("kustomize output#")
                && second.starts_with("kustomize output#")),
        "{err}"
    );

    // Cluster-scoped: a Namespace written with and without a (meaningless) namespace field.
    let repo = GitRepo::new();
    repo.write(
        "apps/x/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team, namespace: shop}\n",
    );
    repo.commit("namespaces");
    let err = render_ns(&repo, "apps/x", "shop", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Duplicate { first, second, .. }
            if first == "apps/x/ns.yaml#1" && second == "apps/x/ns.yaml#2"),
        "{err}"
    );
}

// ---- 8. Kustomize limits apply to what the kustomization reads ----------------------------

/// A file of `bytes` bytes that is valid YAML (a comment after a ConfigMap).
fn big_manifest(name: &str, bytes: usize) -> String {
    let head = cm(name, None, "big");
    format!(
        "{head}# {}\n",
        "x".repeat(bytes.saturating_sub(head.len() + 3))
    )
}

/// The example: a 6 MiB file, a kustomization with a remote base and a symlink out of
/// the repository, all elsewhere in the repository, leave a Kustomize application alone (they
/// stopped every one); so does a large file in the application's own directory that its
/// kustomization does not name. What the kustomization does read stays bounded: a named file
/// over the limit fails the render naming it (also as a generator's input, which Kustomize
/// would otherwise read as anything), and so does a base's.
#[test]
fn kustomize_limits_apply_to_what_the_kustomization_reads() {
    const MIB: usize = 1024 * 1024;
    let repo = GitRepo::new();
    repo.write("base/kustomization.yaml", "resources: [cm.yaml]\n")
        .write("base/cm.yaml", &cm("from-base", None, "1"))
        .write("base/unused-dump.yaml", &big_manifest("dump", 6 * MIB))
        .write(
            "apps/k/kustomization.yaml",
            "resources: [cm.yaml, ../../base]\nconfigMapGenerator:\n- name: gen\n  files: [small.txt]\n",
        )
        .write("apps/k/cm.yaml", &cm("local", None, "1"))
        .write("apps/k/small.txt", "hello\n")
        .write("apps/k/docs/recording.yaml", &big_manifest("rec", 6 * MIB))
        .write("apps/other/big.yaml", &big_manifest("other", 6 * MIB))
        .write(
            "apps/remote/kustomization.yaml",
            "resources: ['https://github.com/example/gitops//base?ref=v1']\n",
        );
    std::fs::create_dir_all(repo.path().join("apps/hostile")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../etc/passwd",
        repo.path().join("apps/hostile/passwd.yaml"),
    )
    .unwrap();
    repo.commit("a big repository");
    let r = render_ns(&repo, "apps/k", "shop", &Limits::default()).unwrap();
    let mut names: Vec<&str> = r
        .objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.contains(&"from-base") && names.contains(&"local"),
        "{names:?}"
    );

    // What it reads over the limit: named, never read as something else.
    let cases = [
        ("resources: [big.yaml]\n", "apps/k/big.yaml"),
        (
            "configMapGenerator:\n- name: gen\n  files: [blob.bin]\n",
            "apps/k/blob.bin",
        ),
        ("resources: [../../base2]\n", "base2/cm.yaml"),
    ];
    for (kustomization, file) in cases {
        let repo = GitRepo::new();
        repo.write("apps/k/kustomization.yaml", kustomization)
            .write("apps/k/big.yaml", &big_manifest("big", 6 * MIB))
            .write("apps/k/blob.bin", &"b".repeat(6 * MIB))
            .write("base2/kustomization.yaml", "resources: [cm.yaml]\n")
            .write("base2/cm.yaml", &big_manifest("big", 6 * MIB));
        repo.commit("reads a big file");
        let err = render_ns(&repo, "apps/k", "shop", &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, RenderError::FileTooLarge { file: f, size, .. }
                if f == file && *size >= 6 * MIB as u64),
            "{kustomization}: {err}"
        );
    }
}

/// The total: files elsewhere in the repository do not count against it; what the
/// kustomization can reach (its directory, its bases, through symlinks) does.
#[test]
fn the_total_limit_counts_only_what_the_kustomization_can_reach() {
    let limits = Limits {
        max_file_bytes: 64 * 1024,
        max_total_bytes: 256 * 1024,
        ..Limits::default()
    };
    let repo = GitRepo::new();
    for i in 0..8 {
        repo.write(
            &format!("apps/other/f{i}.yaml"),
            &big_manifest(&format!("o{i}"), 60 * 1024),
        );
    }
    repo.write("lib/shared/kustomization.yaml", "resources: [cm.yaml]\n")
        .write("lib/shared/cm.yaml", &cm("shared", None, "1"))
        .write(
            "apps/k/kustomization.yaml",
            "resources: [cm.yaml, shared]\n",
        )
        .write("apps/k/cm.yaml", &cm("local", None, "1"));
    std::os::unix::fs::symlink("../../lib/shared", repo.path().join("apps/k/shared")).unwrap();
    repo.commit("480 KiB elsewhere");
    let r = render_ns(&repo, "apps/k", "shop", &limits).unwrap();
    assert_eq!(r.objects.len(), 2, "{}", r.canonical);

    // The same bytes where the kustomization can read them (through the symlinked base).
    for i in 0..5 {
        repo.write(
            &format!("lib/shared/data/f{i}.yaml"),
            &big_manifest(&format!("s{i}"), 60 * 1024),
        );
    }
    repo.commit("300 KiB in the base");
    let err = render_ns(&repo, "apps/k", "shop", &limits).unwrap_err();
    assert!(
        matches!(err, RenderError::CheckoutTooLarge { limit } if limit == 256 * 1024),
        "{err}"
    );
}

// ---- 9. Noise -----------------------------------------------------------------------------

fn app_yaml(f: &crate::reconcile::Fixture) -> String {
    std::fs::read_to_string(f.repo.path().join("apps/guestbook/app.yaml")).unwrap()
}

/// The revision diff of a Secret whose value did not change shows no change, whatever form
/// each revision writes it in (`stringData`, `data`, base64 over several lines) and whether the
/// stored snapshots are sealed or not; a changed value reads `(changed)`, never itself.
#[tokio::test]
async fn a_secret_whose_value_did_not_change_is_no_change_between_revisions() {
    let f = fixture_with(app::model::SyncPolicy::Manual, false).await;
    let sync = |store: server::store::Store| {
        let settings = f.settings.clone();
        async move {
            server::git::sources::GitSources::new(store, &settings)
                .sync_repository("demo")
                .await
                .unwrap();
        }
    };
    let head = |f: &crate::reconcile::Fixture| f.repo.git(&["rev-parse", "HEAD"]);
    let secret_of = |diff: &Value| -> Option<Value> {
        diff["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["object"]["kind"] == "Secret")
            .cloned()
    };
    // The fixture's Secret: `stringData: {password: hunter2}`.
    let v1 = head(&f);
    let original = app_yaml(&f);
    assert!(original.contains("stringData: {password: hunter2}"));

    // The same value in `data`, and a ConfigMap change beside it.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &original.replace(
            "stringData: {password: hunter2}",
            "data: {password: aHVudGVyMg==}",
        ),
    );
    f.repo.write(
        "apps/guestbook/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: slow}\n",
    );
    let v2 = f.repo.commit("data form");
    sync(f.store.clone()).await;
    // `stringData` again, with a label: only the label changed.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &original.replace(
            "kind: Secret\nmetadata: {name: db}",
            "kind: Secret\nmetadata: {name: db, labels: {tier: db}}",
        ),
    );
    let v3 = f.repo.commit("label");
    sync(f.store.clone()).await;
    for (from, to) in [(&v1, &v2), (&v2, &v1), (&v1, &v3)] {
        let diff = server::engine::decisions::diff_revisions(&f.store, "guestbook", from, to)
            .await
            .unwrap();
        if let Some(s) = secret_of(&diff) {
            let paths: Vec<&str> = s["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap())
                .collect();
            assert!(
                paths.iter().all(|p| p.starts_with(".metadata.labels")),
                "{from}..{to}: {diff}"
            );
        }
        assert!(
            diff["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["object"]["kind"] != "Secret"),
            "the other changes are still there: {diff}"
        );
    }

    // Sealed at rest from now on: base64 over two lines, then a real change.
    let ring = server::secrets::Keyring::new("k1", &[7; 32], &[]).unwrap();
    let sealed = f
        .store
        .clone()
        .with_secrets(Some(std::sync::Arc::new(ring)));
    f.repo.write(
        "apps/guestbook/app.yaml",
        &original.replace(
            "stringData: {password: hunter2}",
            "data:\n  password: |\n    aHVudGVy\n    Mg==\n",
        ),
    );
    let v4 = f.repo.commit("wrapped base64");
    sync(sealed.clone()).await;
    f.repo.write(
        "apps/guestbook/app.yaml",
        &original.replace("hunter2", "s3cret-rotated"),
    );
    let v5 = f.repo.commit("new password");
    sync(sealed.clone()).await;
    let same = server::engine::decisions::diff_revisions(&sealed, "guestbook", &v1, &v4)
        .await
        .unwrap();
    assert_eq!(secret_of(&same), None, "{same}");
    let changed = server::engine::decisions::diff_revisions(&sealed, "guestbook", &v4, &v5)
        .await
        .unwrap();
    let s = secret_of(&changed).unwrap();
    assert_eq!(
        s["fields"],
        json!([{"path": ".data.password", "from": "(changed)", "to": "(changed)"}]),
        "{changed}"
    );
    let text = changed.to_string();
    for secret in [
        "s3cret-rotated",
        "czNjcmV0LXJvdGF0ZWQ=",
        "hunter2",
        "aHVudGVyMg==",
    ] {
        assert!(!text.contains(secret), "{text}");
    }
    // Without the key the stored forms are compared: still an answer, never a value.
    let stored = server::engine::decisions::diff_revisions(&f.store, "guestbook", &v4, &v5)
        .await
        .unwrap();
    assert!(!stored.to_string().contains("s3cret-rotated"), "{stored}");
}

/// A sync request stays open, with its approvals, while new branch tips render the same
/// objects (a commit outside the application's path, one that edits a comment in it); the
/// second approval then deploys at the tip. A change of the rendering supersedes it and voids
/// its approvals, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tip_that_renders_the_same_keeps_the_request_and_its_approvals() {
    let policy = server::config::ApprovalPolicy {
        required: 2,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let step = || async {
        f.git.sync_repository("demo").await.unwrap();
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap();
    };
    step().await;
    let (server, people) = approvers(&f).await;
    let pending = || async {
        f.store
            .sync_requests(
                Some(server::store::RequestStatus::Pending),
                Some("guestbook"),
                None,
                10,
            )
            .await
            .unwrap()
    };
    let first = pending().await[0].clone();
    assert_eq!(
        decide(&server, &people["alice"], first.id, "approve", None)
            .await
            .0,
        200
    );

    // Outside the application's path, then a comment inside it.
    f.repo.write("docs/README.md", "notes\n");
    f.repo.commit("docs");
    step().await;
    f.repo.write(
        "apps/guestbook/app.yaml",
        &format!("# reviewed\n{}", app_yaml(&f)),
    );
    let tip = f.repo.commit("comment only");
    step().await;
    let kept = f.store.sync_request(first.id).await.unwrap().unwrap();
    assert_eq!(kept.status, "pending", "{kept:?}");
    assert_eq!(
        kept.revision, first.revision,
        "bound to the change its approvers reviewed"
    );
    assert!(
        kept.approvals.len() == 1 && !kept.approvals[0].void,
        "{kept:?}"
    );
    assert_eq!(pending().await.len(), 1);
    let timeline = f.store.timeline("guestbook", 100).await.unwrap();
    assert!(
        !timeline.iter().any(|(k, _)| k == "sync_request_superseded"),
        "{timeline:?}"
    );
    assert_eq!(
        timeline
            .iter()
            .filter(|(k, _)| k == "sync_requested")
            .count(),
        1,
        "approvers are not asked again: {timeline:?}"
    );

    // The second approval deploys what was approved, at the tip.
    let (status, body) = decide(&server, &people["bob"], first.id, "approve", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("synced")),
        "{body}"
    );
    let (deployed, _) = f
        .store
        .last_successful_sync("guestbook")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deployed, tip);

    // A change of the rendering opens a request; a comment keeps it; the next change
    // supersedes it and voids its approval.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &app_yaml(&f).replace("replicas: 2", "replicas: 3"),
    );
    f.repo.commit("scale to 3");
    step().await;
    let second = pending().await[0].clone();
    assert_ne!(second.id, first.id);
    assert_eq!(
        decide(&server, &people["alice"], second.id, "approve", None)
            .await
            .0,
        200
    );
    f.repo.write(
        "apps/guestbook/app.yaml",
        &format!("# scaled\n{}", app_yaml(&f)),
    );
    f.repo.commit("another comment");
    step().await;
    assert_eq!(pending().await[0].id, second.id);
    f.repo.write(
        "apps/guestbook/app.yaml",
        &app_yaml(&f).replace("replicas: 3", "replicas: 5"),
    );
    f.repo.commit("scale to 5");
    step().await;
    let old = f.store.sync_request(second.id).await.unwrap().unwrap();
    assert_eq!(old.status, "superseded");
    assert!(old.approvals.iter().all(|a| a.void), "{old:?}");
    assert!(old.superseded_by.is_some());
}

/// A pinned application says once that a new rendering is not deployed, not again for every
/// new tip that renders the same objects.
#[tokio::test]
async fn a_pinned_application_announces_each_new_rendering_once() {
    let f = fixture_with(app::model::SyncPolicy::Manual, false).await;
    let state = f.store.app_git_state("guestbook").await.unwrap();
    let pin = server::store::Pin {
        revision: state.target_sha.unwrap(),
        digest: state.target_digest.unwrap(),
        pinned_by: "local:ada".into(),
        pinned_name: "Ada".into(),
        pinned_at: 1,
        reason: "hold".into(),
    };
    let audit = server::store::Actor::system().event(
        "pin",
        "application:guestbook",
        "success",
        json!({}),
        1,
    );
    f.store.pin("guestbook", &pin, &audit).await.unwrap();
    let notices = || async {
        f.store
            .timeline("guestbook", 100)
            .await
            .unwrap()
            .iter()
            .filter(|(k, _)| k == "not_deployed_pinned")
            .count()
    };
    let commit = |path: &str, content: String, message: &str| {
        f.repo.write(path, &content);
        f.repo.commit(message);
    };
    commit(
        "apps/guestbook/app.yaml",
        app_yaml(&f).replace("replicas: 2", "replicas: 3"),
        "scale to 3",
    );
    f.git.sync_repository("demo").await.unwrap();
    assert_eq!(notices().await, 1);
    commit("docs/README.md", "notes\n".into(), "docs");
    f.git.sync_repository("demo").await.unwrap();
    commit(
        "apps/guestbook/app.yaml",
        format!("# still 3\n{}", app_yaml(&f)),
        "comment",
    );
    f.git.sync_repository("demo").await.unwrap();
    assert_eq!(notices().await, 1, "no news: the same objects");
    commit(
        "apps/guestbook/app.yaml",
        app_yaml(&f).replace("replicas: 3", "replicas: 4"),
        "scale to 4",
    );
    f.git.sync_repository("demo").await.unwrap();
    assert_eq!(notices().await, 2);
}
