//! Folding a page of the timeline into cards: a sync request with its approvals (or rejection,
//! or supersession), the sync it ran and the health that followed; a run of requests that were
//! only superseded becomes one "N requests superseded" card. Pure: the page's entries (newest
//! first) with the links between them in, the folded page out.

use app::model::HistoryEntry;

/// How an entry links to others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Links {
    /// The sync request an entry is about (`detail.request`).
    pub request: Option<i64>,
    /// For a request's opening entry: the sync the request ran, if any.
    pub request_sync: Option<i64>,
    /// For a sync entry: its id (`detail.sync`).
    pub sync: Option<i64>,
}

fn opens_request(kind: &str) -> bool {
    matches!(kind, "sync_requested" | "rollback_requested")
}

fn about_request(kind: &str) -> bool {
    matches!(
        kind,
        "approval" | "sync_request_rejected" | "sync_request_superseded"
    )
}

fn follows_sync(kind: &str) -> bool {
    matches!(kind, "health" | "known_good")
}

/// Folds `page` (newest first). A card stands where its newest member stood; its head is the
/// request's opening entry, its children the rest, newest first. Members whose request opened
/// on another page stay as they are.
pub fn fold(page: Vec<(HistoryEntry, Links)>) -> Vec<HistoryEntry> {
    let n = page.len();
    // Which card (by the index of its head) each entry joins.
    let mut owner: Vec<Option<usize>> = vec![None; n];
    for (head, (entry, links)) in page.iter().enumerate() {
        if !opens_request(&entry.kind) {
            continue;
        }
        let Some(request) = links.request else {
            continue;
        };
        for (i, (e, l)) in page.iter().enumerate().take(head) {
            if about_request(&e.kind) && l.request == Some(request) && owner[i].is_none() {
                owner[i] = Some(head);
            }
        }
        let Some(sync) = links.request_sync else {
            continue;
        };
        if let Some(s) = (0..head).find(|&i| page[i].1.sync == Some(sync) && owner[i].is_none()) {
            owner[s] = Some(head);
            // The health and known-good entries right after the sync (newer: lower indices).
            for i in (0..s).rev() {
                if follows_sync(&page[i].0.kind) && owner[i].is_none() {
                    owner[i] = Some(head);
                } else {
                    break;
                }
            }
        }
    }
    // Build the cards; each goes where its newest member was.
    let mut children: Vec<Vec<HistoryEntry>> = vec![Vec::new(); n];
    let mut placed_at: Vec<Option<usize>> = vec![None; n];
    let mut slots: Vec<Option<HistoryEntry>> = Vec::with_capacity(n);
    let mut entries: Vec<Option<HistoryEntry>> = page.into_iter().map(|(e, _)| Some(e)).collect();
    for i in 0..n {
        match owner[i] {
            Some(head) => {
                if placed_at[head].is_none() {
                    placed_at[head] = Some(slots.len());
                    slots.push(None);
                }
                if let Some(e) = entries[i].take() {
                    children[head].push(e);
                }
            }
            None if placed_at[i].is_some() => {} // a head whose card is already placed
            None => {
                placed_at[i] = Some(slots.len());
                slots.push(None);
            }
        }
    }
    for (i, slot) in placed_at.iter().enumerate() {
        if let (Some(at), Some(mut e)) = (slot, entries[i].take()) {
            e.children = std::mem::take(&mut children[i]);
            e.summary = summary(&e.children);
            slots[*at] = Some(e);
        }
    }
    runs_of_superseded(slots.into_iter().flatten().collect())
}

/// "2 × Approved · Sync · Health": what a card holds, by label, in the order met.
fn summary(children: &[HistoryEntry]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for c in children {
        let (_, label, _) = app::model::timeline_style(&c.kind);
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(label, n)| {
            if n == 1 {
                label.to_owned()
            } else {
                format!("{n} × {label}")
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A card that is only a request opened and then superseded (no approval, no sync).
fn only_superseded(e: &HistoryEntry) -> bool {
    opens_request(&e.kind)
        && !e.children.is_empty()
        && e.children
            .iter()
            .all(|c| c.kind == "sync_request_superseded")
}

/// Two or more such cards in a row become one `superseded_run` card holding them. Commits
/// between them (each new revision is a commit) do not break the run: they stay visible, right
/// after the run's card.
fn runs_of_superseded(cards: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let mut out: Vec<HistoryEntry> = Vec::with_capacity(cards.len());
    // Everything since the run began, in order: superseded cards and the commits among them.
    let mut pending: Vec<HistoryEntry> = Vec::new();
    let flush = |pending: &mut Vec<HistoryEntry>, out: &mut Vec<HistoryEntry>| {
        let (run, commits): (Vec<HistoryEntry>, Vec<HistoryEntry>) =
            pending.drain(..).partition(only_superseded);
        if run.len() >= 2 {
            let newest = &run[0];
            out.push(HistoryEntry {
                key: format!("run-{}", newest.key),
                kind: "superseded_run".into(),
                at: newest.at,
                message: format!(
                    "{} sync requests superseded: each new revision replaced the one before",
                    run.len()
                ),
                revision: None,
                results: Vec::new(),
                signature: None,
                summary: format!("Show the {} requests", run.len()),
                children: run,
            });
            out.extend(commits);
        } else {
            // Not a run: everything as it came.
            let mut all: Vec<HistoryEntry> = run.into_iter().chain(commits).collect();
            all.sort_by_key(|e| std::cmp::Reverse(e.at));
            out.extend(all);
        }
    };
    for card in cards {
        if only_superseded(&card) || (!pending.is_empty() && card.kind == "commit") {
            pending.push(card);
        } else {
            flush(&mut pending, &mut out);
            out.push(card);
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, kind: &str, at: i64) -> HistoryEntry {
        HistoryEntry {
            key: key.into(),
            kind: kind.into(),
            at,
            message: key.into(),
            revision: None,
            results: Vec::new(),
            signature: None,
            children: Vec::new(),
            summary: String::new(),
        }
    }

    fn req(id: i64) -> Links {
        Links {
            request: Some(id),
            ..Default::default()
        }
    }

    fn keys(list: &[HistoryEntry]) -> Vec<String> {
        list.iter()
            .map(|e| {
                if e.children.is_empty() {
                    e.key.clone()
                } else {
                    format!("{}[{}]", e.key, keys(&e.children).join(" "))
                }
            })
            .collect()
    }

    #[test]
    fn a_request_its_approvals_sync_and_health_are_one_card_where_the_newest_was() {
        let page = vec![
            (e("known", "known_good", 9), Links::default()),
            (e("health", "health", 8), Links::default()),
            (
                e("sync", "sync", 7),
                Links {
                    sync: Some(40),
                    ..Default::default()
                },
            ),
            (e("ok2", "approval", 6), req(5)),
            (e("commit", "commit", 5), Links::default()),
            (e("ok1", "approval", 4), req(5)),
            (
                e("req5", "sync_requested", 3),
                Links {
                    request: Some(5),
                    request_sync: Some(40),
                    sync: None,
                },
            ),
            (e("older", "drift_opened", 1), Links::default()),
        ];
        let folded = fold(page);
        assert_eq!(
            keys(&folded),
            ["req5[known health sync ok2 ok1]", "commit", "older"]
        );
        assert_eq!(
            folded[0].summary,
            "Known good · Health · Sync · 2 × Approved"
        );
    }

    #[test]
    fn runs_of_superseded_requests_fold_into_one_card() {
        let mut page = Vec::new();
        for id in (1..=5).rev() {
            page.push((
                e(&format!("sup{id}"), "sync_request_superseded", id * 10 + 1),
                req(id),
            ));
            page.push((e(&format!("req{id}"), "sync_requested", id * 10), req(id)));
        }
        page.insert(0, (e("req6", "sync_requested", 70), req(6)));
        let folded = fold(page);
        assert_eq!(folded.len(), 2, "{:?}", keys(&folded));
        assert_eq!(folded[0].key, "req6");
        assert_eq!(folded[1].kind, "superseded_run");
        assert!(folded[1].message.starts_with("5 sync requests superseded"));
        assert_eq!(keys(&folded[1].children)[0], "req5[sup5]");
        // Commits between them (the new revisions) stay visible, after the run's card.
        let mut page = Vec::new();
        for id in (1..=3).rev() {
            page.push((
                e(&format!("sup{id}"), "sync_request_superseded", id * 10 + 2),
                req(id),
            ));
            page.push((
                e(&format!("c{id}"), "commit", id * 10 + 1),
                Links::default(),
            ));
            page.push((e(&format!("req{id}"), "sync_requested", id * 10), req(id)));
        }
        let folded = fold(page);
        assert_eq!(
            folded.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(),
            ["superseded_run", "commit", "commit", "commit"]
        );
        assert_eq!(folded[0].children.len(), 3);
        // A single superseded request stays as it is.
        let one = fold(vec![
            (e("sup1", "sync_request_superseded", 2), req(1)),
            (e("req1", "sync_requested", 1), req(1)),
        ]);
        assert_eq!(keys(&one), ["req1[sup1]"]);
    }

    #[test]
    fn members_of_a_request_opened_on_another_page_stay_apart() {
        let page = vec![
            (e("ok", "approval", 3), req(9)),
            (e("c", "commit", 2), Links::default()),
        ];
        assert_eq!(keys(&fold(page)), ["ok", "c"]);
    }
}
