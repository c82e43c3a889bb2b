//! The commits of a branch that touch an application's path, as `git log <rev> -- <path>`
//! lists them: newest first by commit date, with git's default history simplification (a commit
//! identical to one of its parents at the path is left out and only that parent is followed;
//! merges that differ from every parent are listed).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use git2::{Commit, Oid, Repository};

pub use crate::store::CommitInfo;

impl CommitInfo {
    fn from_commit(c: &Commit<'_>) -> Self {
        let message = c.message().unwrap_or_default();
        let (title, body) = match message.split_once('\n') {
            Some((t, b)) => (t.trim().to_owned(), b.trim().to_owned()),
            None => (message.trim().to_owned(), String::new()),
        };
        let author = c.author();
        let committer = c.committer();
        Self {
            sha: c.id().to_string(),
            parents: c.parent_ids().map(|p| p.to_string()).collect(),
            author_name: author.name().unwrap_or_default().to_owned(),
            author_email: author.email().unwrap_or_default().to_owned(),
            committer_name: committer.name().unwrap_or_default().to_owned(),
            committer_email: committer.email().unwrap_or_default().to_owned(),
            committed_at: c.time().seconds() * 1000,
            title,
            body,
        }
    }
}

struct Queued {
    time: i64,
    seq: u64,
    id: Oid,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Newest first; among equal times, first queued first (as git's date-ordered queue).
    fn cmp(&self, other: &Self) -> Ordering {
        self.time.cmp(&other.time).then(other.seq.cmp(&self.seq))
    }
}

/// Walks history from `tip`, not descending into `hide` (commits already ingested, e.g. the
/// previous tip on a fast-forward), and returns the commits that touch `path` (`""` = the
/// whole tree), newest first.
pub fn touching(
    repo: &Repository,
    tip: Oid,
    path: &str,
    hide: Option<Oid>,
) -> Result<Vec<CommitInfo>, git2::Error> {
    touching_any(repo, tip, &[path], hide)
}

/// [`touching`] for several paths, as `git log <rev> -- <path>...` lists them: a commit is
/// listed when it changes any of them (a chart directory and its values files elsewhere).
pub fn touching_any(
    repo: &Repository,
    tip: Oid,
    paths: &[&str],
    hide: Option<Oid>,
) -> Result<Vec<CommitInfo>, git2::Error> {
    // On a fast-forward only the new range is walked (libgit2 stops early when hiding).
    let range: Option<HashSet<Oid>> = match hide {
        Some(h) => Some(range(repo, tip, h)?),
        None => None,
    };
    let paths: Vec<&str> = paths.iter().map(|p| p.trim_matches('/')).collect();
    // Per commit, the object id at each path (`None`: absent); equal lists mean TREESAME.
    let mut path_ids: HashMap<Oid, Vec<Option<Oid>>> = HashMap::new();
    let mut path_id = |c: &Commit<'_>| -> Result<Vec<Option<Oid>>, git2::Error> {
        if let Some(ids) = path_ids.get(&c.id()) {
            return Ok(ids.clone());
        }
        let tree = c.tree()?;
        let mut ids = Vec::with_capacity(paths.len());
        for path in &paths {
            ids.push(if path.is_empty() {
                Some(tree.id())
            } else {
                match tree.get_path(std::path::Path::new(path)) {
                    Ok(entry) => Some(entry.id()),
                    Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                    Err(e) => return Err(e),
                }
            });
        }
        path_ids.insert(c.id(), ids.clone());
        Ok(ids)
    };

    let mut out = Vec::new();
    let mut seen: HashSet<Oid> = HashSet::new();
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<Queued>, seen: &mut HashSet<Oid>, c: &Commit<'_>| {
        let in_range = range.as_ref().is_none_or(|r| r.contains(&c.id()));
        if in_range && seen.insert(c.id()) {
            seq += 1;
            queue.push(Queued {
                time: c.time().seconds(),
                seq,
                id: c.id(),
            });
        }
    };
    let tip_commit = repo.find_commit(tip)?;
    push(&mut queue, &mut seen, &tip_commit);
    while let Some(Queued { id, .. }) = queue.pop() {
        let commit = repo.find_commit(id)?;
        let mine = path_id(&commit)?;
        let parents: Vec<Commit<'_>> = commit.parents().collect();
        if parents.is_empty() {
            if mine.iter().any(Option::is_some) {
                out.push(CommitInfo::from_commit(&commit));
            }
            continue;
        }
        let mut treesame = None;
        for p in &parents {
            if path_id(p)? == mine {
                treesame = Some(p);
                break;
            }
        }
        match treesame {
            Some(p) => push(&mut queue, &mut seen, p),
            None => {
                out.push(CommitInfo::from_commit(&commit));
                for p in &parents {
                    push(&mut queue, &mut seen, p);
                }
            }
        }
    }
    Ok(out)
}

/// Commits reachable from `tip` but not from `hide` (`git rev-list hide..tip`).
fn range(repo: &Repository, tip: Oid, hide: Oid) -> Result<HashSet<Oid>, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    walk.hide(hide)?;
    walk.collect::<Result<HashSet<Oid>, _>>()
}
