//! The Git tree walk: the input is written as a raw tree object (no validation by Git) under
//! `app/` of a commit, then rendered as plain manifests and checked out as the Kustomize render
//! does. Never panics, and the checkout never writes outside its directory.
#![no_main]

use std::sync::Mutex;

use git2::{ObjectType, Oid, Repository};
use libfuzzer_sys::fuzz_target;
use server::render::{checkout, render, Limits};

struct Scratch {
    _dir: tempfile::TempDir,
    repo: Repository,
    uses: u32,
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

fn raw_tree(entries: &[(&str, &[u8], Oid)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, id) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut guard = SCRATCH.lock().unwrap();
    // A fresh repository every 5,000 inputs keeps the object store small.
    if guard.as_ref().is_none_or(|s| s.uses >= 5_000) {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        *guard = Some(Scratch { _dir: dir, repo, uses: 0 });
    }
    let scratch = guard.as_mut().unwrap();
    scratch.uses += 1;
    let repo = &scratch.repo;
    let odb = repo.odb().unwrap();
    let blob = odb
        .write(ObjectType::Blob, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
        .unwrap();
    // The input's first byte chooses between the input as a whole tree, or as one entry name.
    let app = match data.split_first() {
        Some((b, name)) if b % 2 == 0 => {
            odb.write(ObjectType::Tree, &raw_tree(&[("100644", name, blob)])).unwrap()
        }
        _ => odb.write(ObjectType::Tree, data).unwrap(),
    };
    let root = odb
        .write(ObjectType::Tree, &raw_tree(&[("40000", b"app", app)]))
        .unwrap();
    let commit = odb
        .write(
            ObjectType::Commit,
            format!(
                "tree {root}\nauthor F <f@x> 1700000000 +0000\ncommitter F <f@x> 1700000000 +0000\n\nfuzz\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let limits = Limits {
        max_files: 200,
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let _ = render(repo, commit, "app", "default", &limits);
    if let Ok(tree) = repo.find_tree(root) {
        let outer = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let dest = outer.path().join("checkout");
        std::fs::create_dir(&dest).unwrap();
        let _ = checkout(repo, &tree, &dest, &limits);
        let names: Vec<_> = std::fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["checkout"], "the checkout wrote beside its directory");
    };
});
