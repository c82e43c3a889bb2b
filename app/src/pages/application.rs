//! One application: header (source, target and deployed revision, policy, badges, pinned
//! banner), the open sync request with Approve / Reject, and three tabs — Timeline (live over
//! Server-Sent Events), Resources and Diff — plus the Rollback dialog. Tabs, filters, paging and
//! the dialog are links and GET forms; decisions are `ActionForm`s: all of it works before the
//! WASM loads.

use leptos::either::{Either, EitherOf4};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::api::{
    application_detail, application_diff, application_history, known_good, Rollback, Unpin,
};
use crate::components::widgets::{
    duration, health_style, query_string, report, ErrorList, GetForm, Reload, RequestPanel, Sha,
    SignatureBadge, StatusBadges, When,
};
use crate::model::{
    timeline_style, AppDetail, DiffQuery, DiffView, HistoryEntry, HistoryPage, ResourceView,
    RevisionView, TIMELINE_GROUPS,
};

/// The application page.
#[component]
pub fn ApplicationPage() -> impl IntoView {
    let params = use_params_map();
    let name = Memo::new(move |_| params.with(|p| p.get("name").unwrap_or_default()));
    let query = use_query_map();
    let param =
        move |key: &'static str| Memo::new(move |_| query.with(|q| q.get(key).unwrap_or_default()));
    let tab = param("tab");
    let dialog = param("dialog");
    let reload = Reload::provide();
    // Bumped by the live event stream whenever the application's history or status moves.
    let live = RwSignal::new(0u64);
    listen(name, live);
    let detail = Resource::new(
        move || (name.get(), reload.get(), live.get()),
        |(n, _, _)| application_detail(n),
    );

    let tab_link = move |key: &'static str, label: &'static str| {
        view! {
            <a
                href=move || format!("/applications/{}?tab={key}", name.get())
                aria-current=move || {
                    let current = tab.get();
                    (current == key || (current.is_empty() && key == "timeline")).then_some("page")
                }
            >
                {label}
            </a>
        }
    };

    view! {
        <Title text=move || name.get() />
        <Transition fallback=|| view! { <p class="muted">"Loading the application…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    detail.await.map(|d| view! { <Header detail=d /> })
                })}
            </ErrorBoundary>
        </Transition>
        <nav class="tabs" aria-label="Application views">
            {tab_link("timeline", "Timeline")}
            {tab_link("resources", "Resources")}
            {tab_link("tree", "Tree")}
            {tab_link("diff", "Diff")}
        </nav>
        {move || match tab.get().as_str() {
            "resources" => EitherOf4::A(view! { <ResourcesTab detail /> }),
            "diff" => EitherOf4::B(view! { <DiffTab name /> }),
            "tree" => EitherOf4::D(view! { <TreeTab name live /> }),
            _ => EitherOf4::C(view! { <TimelineTab name live /> }),
        }}
        {move || (dialog.get() == "rollback").then(|| view! { <RollbackDialog name detail /> })}
    }
}

/// Subscribes to the application's event stream (in the browser only) and bumps `live` on
/// every change.
#[allow(unused_variables)]
fn listen(name: Memo<String>, live: RwSignal<u64>) {
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use wasm_bindgen::JsCast;
        let app = name.get();
        let Ok(source) = web_sys::EventSource::new(&format!("/api/v1/applications/{app}/events"))
        else {
            return;
        };
        let on_change = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::Event)>::new(
            move |_: web_sys::Event| live.update(|n| *n += 1),
        );
        let _ =
            source.add_event_listener_with_callback("changed", on_change.as_ref().unchecked_ref());
        let held = send_wrapper::SendWrapper::new((source, on_change));
        on_cleanup(move || held.take().0.close());
    });
}

#[component]
fn Header(detail: AppDetail) -> impl IntoView {
    let app = detail.summary.clone();
    let now = detail.now;
    let name = app.name.clone();
    let unpin = ServerAction::<Unpin>::new();
    report(unpin.value());
    let policy = &detail.policy;
    let policy_text = if policy.auto_sync {
        let mut parts = vec!["auto-sync".to_owned()];
        if policy.self_heal {
            parts.push("self-heal".into());
        }
        if policy.prune {
            parts.push("prune".into());
        }
        parts.join(" · ")
    } else if policy.approvals_required == 0 {
        "manual · deployers sync directly".to_owned()
    } else {
        let groups = if policy.approval_groups.is_empty() {
            String::new()
        } else {
            format!(" from {}", policy.approval_groups.join(", "))
        };
        format!(
            "manual · {} approval{}{groups} · {}",
            policy.approvals_required,
            if policy.approvals_required == 1 {
                ""
            } else {
                "s"
            },
            if policy.sync_on_approval {
                "syncs on approval"
            } else {
                "then “Sync now”"
            }
        )
    };
    let policy_text = if policy.require_signed {
        format!("{policy_text} · signed commits only")
    } else {
        policy_text
    };
    let rollback_href = format!("/applications/{name}?dialog=rollback");
    view! {
        <header class="app-head">
            <div class="title-row">
                <h1 id="app-name">{name.clone()}</h1>
                <StatusBadges app=app.clone() />
                {detail.drift_since.map(|since| view! {
                    <span class="status warn" data-testid="drift-badge">
                        <span aria-hidden="true">"≠ "</span>{format!("Drifted {}", duration(now - since))}
                    </span>
                })}
                <span class="spacer"></span>
                {match detail.rollback_why_not.clone() {
                    None => Either::Left(view! { <a class="button" href=rollback_href data-testid="rollback-open">"Roll back…"</a> }),
                    Some(why) => Either::Right(view! { <span class="button disabled" aria-disabled="true" title=why.clone()>"Roll back…"</span> }),
                }}
            </div>
            <dl class="facts">
                <div><dt>"Source"</dt><dd><span class="mono" title=app.repo_url.clone()>{app.source.clone()}</span></dd></div>
                <div><dt>"Target"</dt><dd>
                    <span class="mono">{app.target_revision.clone()}</span>
                    {app.target_sha.clone().map(|s| view! { " " <Sha sha=s /> })}
                    " " <SignatureBadge signature=detail.target_signature.clone() />
                </dd></div>
                <div><dt>"Deployed"</dt><dd>
                    {match detail.deployed_sha.clone() {
                        Some(s) => Either::Left(view! { <Sha sha=s /> }),
                        None => Either::Right(view! { <span class="muted">"nothing yet"</span> }),
                    }}
                    {match (app.last_deploy_by.clone(), app.last_deploy_at) {
                        (Some(by), Some(at)) => Some(view! { " by " {by} ", " <When at now /> }),
                        _ => None,
                    }}
                </dd></div>
                <div><dt>"Destination"</dt><dd>{format!("{} / {}", app.cluster, app.namespace)}</dd></div>
                <div><dt>"Project"</dt><dd>{app.project.clone()}</dd></div>
                <div><dt>"Policy"</dt><dd data-testid="policy">{policy_text}</dd></div>
            </dl>
            {detail.held_back.clone().map(|why| view! {
                <p class="alert" role="status" data-testid="held-back">
                    <span aria-hidden="true">"⊘ "</span><strong>"Not deployed: "</strong>{why}
                </p>
            })}
            {app.git_error.clone().map(|e| view! {
                <p class="alert" role="status"><span aria-hidden="true">"⚠ "</span><strong>"Git: "</strong>{e}</p>
            })}
            {(app.sync_status.as_deref() == Some("Unknown"))
                .then(|| app.health_message.clone().filter(|m| !m.is_empty()))
                .flatten()
                .map(|m| view! {
                    <p class="alert" role="status" data-testid="compare-error">
                        <span aria-hidden="true">"⚠ "</span><strong>"Compare failed: "</strong>{m}
                    </p>
                })}
            {detail.pin.clone().map(|pin| {
                let name = name.clone();
                view! {
                    <div class="banner pinned" role="status" data-testid="pinned-banner">
                        <p>
                            <span aria-hidden="true">"⚲ "</span>
                            <strong>"Pinned at " <Sha sha=pin.revision.clone() /></strong>
                            {format!(" by {} ", pin.by)} <When at=pin.at now />
                            {format!(": “{}”. Auto-sync and new sync requests are paused; self-heal keeps this revision.", pin.reason)}
                        </p>
                        {detail.rollback_why_not.is_none().then(|| view! {
                            <ActionForm action=unpin>
                                <input type="hidden" name="name" value=name.clone() />
                                <button type="submit" class="button" data-testid="unpin">"Unpin"</button>
                            </ActionForm>
                        })}
                    </div>
                }
            })}
            {detail.request.clone().map(|req| view! { <RequestPanel req now /> })}
        </header>
    }
}

#[component]
fn TimelineTab(name: Memo<String>, live: RwSignal<u64>) -> impl IntoView {
    let query = use_query_map();
    let group = Memo::new(move |_| query.with(|q| q.get("kinds").unwrap_or_default()));
    let date = Memo::new(move |_| query.with(|q| q.get("date").unwrap_or_default()));
    let date_shown = date;
    // "Jump to date": a page starting at the end of that day, unless paging on from there.
    let cursor = Memo::new(move |_| {
        query
            .with(|q| q.get("cursor").filter(|c| !c.is_empty()))
            .or_else(|| crate::components::widgets::cursor_at_end_of(&date.get()))
            .unwrap_or_default()
    });
    let reload = use_context::<Reload>().map(|r| r.0);
    let history = Resource::new(
        move || {
            (
                name.get(),
                group.get(),
                cursor.get(),
                live.get(),
                reload.map(|r| r.get()),
            )
        },
        |(name, group, cursor, _, _)| {
            let kinds = TIMELINE_GROUPS
                .iter()
                .filter(|(key, _, _)| group.split(',').any(|g| g == *key))
                .flat_map(|(_, _, kinds)| kinds.iter().copied())
                .collect::<Vec<_>>()
                .join(",");
            application_history(name, kinds, cursor)
        },
    );
    let link = move |key: &'static str, label: &'static str| {
        view! {
            <a
                href=move || format!("/applications/{}?{}", name.get(), query_string(&[("tab", "timeline"), ("kinds", key)]))
                aria-current=move || (group.get() == key).then_some("true")
                class="chip"
            >
                {label}
            </a>
        }
    };
    view! {
        <section class="timeline-tab" aria-labelledby="timeline-title">
            <h2 id="timeline-title" class="sr-only">"Timeline"</h2>
            <nav class="chips" aria-label="Filter the timeline">
                {link("", "Everything")}
                {TIMELINE_GROUPS.iter().map(|(key, label, _)| link(key, label)).collect_view()}
            </nav>
            <Transition fallback=|| view! { <p class="muted">"Loading the timeline…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || {
                        let (name, group, cursor) = (name.get(), group.get(), cursor.get());
                        Suspend::new(async move {
                            let date = date_shown.get_untracked();
                            history.await.map(|page| view! { <Timeline page name group cursor date /> })
                        })
                    }}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

#[component]
fn Timeline(
    page: HistoryPage,
    name: String,
    group: String,
    cursor: String,
    date: String,
) -> impl IntoView {
    let now = page.now;
    // Plain HTML (a GET form and a button js/enhance.js drives): no WASM needed for either.
    let tools = view! {
        <div class="timeline-tools">
            <form method="get" action=format!("/applications/{name}") class="jump">
                <input type="hidden" name="tab" value="timeline" />
                <input type="hidden" name="kinds" value=group.clone() />
                <label for="jump-date">"Jump to date"</label>
                <input id="jump-date" type="date" name="date" value=date />
                <button type="submit" class="button">"Go"</button>
            </form>
            <button type="button" class="button density" data-action="density" aria-pressed="false" title="Compact or comfortable timeline (remembered in this browser)">
                "Compact view"
            </button>
        </div>
    };
    if page.entries.is_empty() {
        return Either::Left(view! {
            {tools}
            <section class="empty">
                <h2>"Nothing here yet"</h2>
                <p>"Commits touching this application's path, syncs, drift, approvals and rollbacks appear here as they happen; this page updates by itself."</p>
            </section>
        });
    }
    let older = page.next.as_ref().map(|c| {
        format!(
            "/applications/{name}?{}",
            query_string(&[("tab", "timeline"), ("kinds", &group), ("cursor", c)])
        )
    });
    let newest = (!cursor.is_empty()).then(|| {
        format!(
            "/applications/{name}?{}",
            query_string(&[("tab", "timeline"), ("kinds", &group)])
        )
    });
    Either::Right(view! {
        {tools}
        <ol class="timeline" data-testid="timeline">
            {page.entries.into_iter().map(|e| view! { <TimelineItem entry=e now /> }).collect_view()}
        </ol>
        <nav class="pager" aria-label="Timeline pages">
            {newest.map(|href| view! { <a href=href>"← Newest"</a> })}
            {older.map(|href| view! { <a href=href data-testid="older">"Load older →"</a> })}
        </nav>
    })
}

/// A sync's per-resource results, collapsed ("3 resource results"); nothing when there are none.
#[component]
fn Results(results: Vec<(String, String, String)>) -> impl IntoView {
    (!results.is_empty()).then(|| {
        view! {
            <details class="results">
                <summary>{format!("{} resource result{}", results.len(), if results.len() == 1 { "" } else { "s" })}</summary>
                <ul>
                    {results.into_iter().map(|(action, object, message)| {
                        let tone = if action == "failed" { "bad" } else { "" };
                        view! {
                        <li class=tone>
                            <span class="badge">{action}</span> " " <span class="mono">{object}</span>
                            {(!message.is_empty()).then(|| view! { " — " {message} })}
                        </li>
                    }}).collect_view()}
                </ul>
            </details>
        }
    })
}

/// One entry folded into a card: label, revision, message, time and a sync's per-resource
/// results; a folded request of a "superseded" run lists its own entries as lines. Not recursive (a recursive view costs the WASM dearly).
#[component]
fn TimelineChild(entry: HistoryEntry, now: i64) -> impl IntoView {
    let (icon, label, tone) = timeline_style(&entry.kind);
    let lines: Vec<(String, &'static str, String)> = entry
        .children
        .iter()
        .map(|c| (c.key.clone(), timeline_style(&c.kind).1, c.message.clone()))
        .collect();
    view! {
        <li class=format!("event {tone}") id=entry.key.clone() data-kind=entry.kind.clone()>
            <span class="icon" aria-hidden="true">{icon}</span>
            <div class="body">
                <p>
                    <span class=format!("status {tone}")>{label}</span>
                    " "
                    {entry.revision.clone().map(|r| view! { <Sha sha=r /> " " })}
                    <span class="message">{entry.message.clone()}</span>
                </p>
                <p class="when"><When at=entry.at now /></p>
                <Results results=entry.results.clone() />
                {(!lines.is_empty()).then(|| view! {
                    <ul class="fold-lines">
                        {lines.into_iter().map(|(key, label, message)| view! {
                            <li id=key><span class="badge">{label}</span> " " {message}</li>
                        }).collect_view()}
                    </ul>
                })}
            </div>
        </li>
    }
}

#[component]
fn TimelineItem(entry: HistoryEntry, now: i64) -> impl IntoView {
    let (icon, label, tone) = timeline_style(&entry.kind);
    let results = entry.results.clone();
    let children = entry.children.clone();
    let summary = entry.summary.clone();
    view! {
        <li class=format!("event {tone}") id=entry.key.clone() data-kind=entry.kind.clone()>
            <span class="icon" aria-hidden="true">{icon}</span>
            <div class="body">
                <p>
                    <span class=format!("status {tone}")>{label}</span>
                    " "
                    {entry.revision.clone().map(|r| view! { <Sha sha=r /> " " })}
                    {entry.signature.clone().map(|v| view! { <SignatureBadge signature=Some(v) /> " " })}
                    <span class="message">{entry.message.clone()}</span>
                </p>
                <p class="when"><When at=entry.at now /></p>
                <Results results />
                {(!children.is_empty()).then(|| view! {
                    <details class="fold" data-testid="fold">
                        <summary>{summary}</summary>
                        <ol class="timeline nested">
                            {children.into_iter().map(|c| view! { <TimelineChild entry=c now /> }).collect_view()}
                        </ol>
                    </details>
                })}
            </div>
        </li>
    }
}

#[component]
fn ResourcesTab(detail: Resource<Result<AppDetail, crate::model::AppError>>) -> impl IntoView {
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading resources…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    detail.await.map(|d| view! { <Resources name=d.summary.name resources=d.resources /> })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn Resources(name: String, resources: Vec<ResourceView>) -> impl IntoView {
    if resources.is_empty() {
        return Either::Left(view! {
            <section class="empty">
                <h2>"No resources compared yet"</h2>
                <p>"Tidemark compares the application with the cluster once its revision is rendered; check the timeline for Git or render errors."</p>
            </section>
        });
    }
    let mut kinds: Vec<String> = resources.iter().map(|r| r.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    Either::Right(view! {
        <div class="resources" data-testid="resources">
            {kinds.into_iter().map(|kind| {
                let of_kind: Vec<ResourceView> = resources.iter().filter(|r| r.kind == kind).cloned().collect();
                let name = name.clone();
                view! {
                    <section aria-label=kind.clone()>
                        <h3>{format!("{kind} ({})", of_kind.len())}</h3>
                        <table class="resource-table">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Namespace"</th><th scope="col">"Status"</th><th scope="col">"Health"</th><th scope="col">"Diff"</th></tr></thead>
                            <tbody>
                                {of_kind.into_iter().map(|r| {
                                    let (sync_icon, sync_tone) = match r.status.as_str() {
                                        "Synced" => ("✓", "ok"),
                                        "Missing" => ("✕", "bad"),
                                        _ => ("≠", "warn"),
                                    };
                                    let health = r.health.clone().unwrap_or_else(|| "Unknown".into());
                                    let (health_icon, health_tone) = health_style(&health);
                                    let href = format!("/applications/{name}?{}", query_string(&[("tab", "diff"), ("resource", &r.key())]));
                                    view! {
                                        <tr data-resource=r.key()>
                                            <th scope="row" class="mono">{r.name.clone()}</th>
                                            <td>{if r.namespace.is_empty() { "(cluster)".to_owned() } else { r.namespace.clone() }}</td>
                                            <td><span class=format!("status {sync_tone}")><span aria-hidden="true">{sync_icon}" "</span>{r.status.clone()}</span></td>
                                            <td>
                                                <span class=format!("status {health_tone}")><span aria-hidden="true">{health_icon}" "</span>{health}</span>
                                                {r.health_message.clone().map(|m| view! { <span class="muted">{format!(" {m}")}</span> })}
                                            </td>
                                            <td>{if r.changes > 0 {
                                                Either::Left(view! { <a href=href>{format!("{} field{} →", r.changes, if r.changes == 1 { "" } else { "s" })}</a> })
                                            } else {
                                                Either::Right(view! { <span class="muted">"—"</span> })
                                            }}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </section>
                }
            }).collect_view()}
        </div>
    })
}

/// The live resource tree, rendered by the server (plain HTML: works before the WASM loads).
#[component]
fn TreeTab(name: Memo<String>, live: RwSignal<u64>) -> impl IntoView {
    let query = use_query_map();
    let tree = Resource::new(
        move || {
            let q = |k: &str| query.with(|m| m.get(k).unwrap_or_default());
            // An open log is not re-read on every change (each read is an audit row).
            let logs = q("logs");
            let bump = if logs.is_empty() { live.get() } else { 0 };
            (
                name.get(),
                [q("kind"), q("health"), q("node"), logs, q("container")],
                q("managed") == "1",
                bump,
            )
        },
        |(n, [kind, health, node, logs, container], managed, _)| {
            crate::api::application_tree(n, kind, health, node, logs, container, managed)
        },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading the tree…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    tree.await.map(|html| view! { <div class="tree-tab" inner_html=html></div> })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn DiffTab(name: Memo<String>) -> impl IntoView {
    let query = use_query_map();
    let get = move |k: &'static str| query.with(|q| q.get(k).unwrap_or_default());
    let diff_query = Memo::new(move |_| DiffQuery {
        from: get("from"),
        to: get("to"),
    });
    let split = Memo::new(move |_| get("view") == "split");
    let focus = Memo::new(move |_| get("resource"));
    let reload = use_context::<Reload>().map(|r| r.0);
    let diff = Resource::new(
        move || (name.get(), diff_query.get(), reload.map(|r| r.get())),
        |(n, q, _)| application_diff(n, q),
    );
    let revisions = Resource::new(move || name.get(), known_good);
    let view_link = move |mode: &'static str, label: &'static str| {
        view! {
            <a
                class="chip"
                aria-current=move || ((mode == "split") == split.get()).then_some("true")
                href=move || {
                    let q = diff_query.get();
                    format!("/applications/{}?{}", name.get(), query_string(&[("tab", "diff"), ("from", &q.from), ("to", &q.to), ("view", mode), ("resource", &focus.get())]))
                }
            >
                {label}
            </a>
        }
    };
    view! {
        <section class="diff-tab" aria-labelledby="diff-title">
            <h2 id="diff-title" class="sr-only">"Diff"</h2>
            <div class="diff-controls">
                <nav class="chips" aria-label="Diff layout">
                    {view_link("unified", "Unified")}
                    {view_link("split", "Side by side")}
                </nav>
                <a class="chip" href=move || format!("/applications/{}?tab=diff", name.get())
                    aria-current=move || diff_query.with(|q| q.from.is_empty()).then_some("true")>"Git vs live"</a>
                <GetForm action="" class="compare">
                    <input type="hidden" name="tab" value="diff" />
                    <Transition fallback=|| ()>
                        {move || {
                            let q = diff_query.get();
                            Suspend::new(async move {
                            let revs: Vec<RevisionView> = revisions.await.unwrap_or_default();
                            let options = move |selected: String| revs.iter().map(|r| {
                                let label = format!("{} {}", &r.revision[..7.min(r.revision.len())], r.title.clone().unwrap_or_default());
                                view! { <option value=r.revision.clone() selected=r.revision == selected>{label}</option> }
                            }).collect_view();
                            view! {
                                <label>"From" <select name="from"><option value="">"—"</option>{options.clone()(q.from.clone())}</select></label>
                                <label>"To" <select name="to"><option value="">"—"</option>{options(q.to.clone())}</select></label>
                            }
                        })}}
                    </Transition>
                    <button type="submit" class="button">"Compare revisions"</button>
                </GetForm>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Comparing…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || {
                        // Layout and focus change the view, not the data: track them here.
                        let (split, focus) = (split.get(), focus.get());
                        Suspend::new(async move {
                            diff.await.map(|d| view! { <Diff diff=d split focus /> })
                        })
                    }}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

/// A comparison, one collapsible section per resource; changed fields marked − (before) and
/// + (after), with words as well as colours.
#[component]
pub fn Diff(diff: DiffView, split: bool, focus: String) -> impl IntoView {
    let DiffView {
        mode,
        before_label,
        after_label,
        resources,
        compared,
    } = diff;
    if resources.is_empty() {
        let what = if mode == "live" {
            format!("The cluster matches Git: all {compared} resources are in sync.")
        } else {
            format!("{before_label} and {after_label} render the same objects.")
        };
        return Either::Left(view! { <p class="notice" data-testid="diff-empty">{what}</p> });
    }
    let summary = format!(
        "{} of {compared} resources differ · − {before_label} · + {after_label}",
        resources.len()
    );
    Either::Right(view! {
        <p class="muted" data-testid="diff-summary">{summary}</p>
        <div class="diff" data-testid="diff">
            {resources.into_iter().map(|r| {
                let open = focus.is_empty() || focus == r.key();
                let key = r.key();
                view! {
                    <details class="diff-resource" open=open data-resource=key.clone()>
                        <summary>
                            <span class="badge">{r.status.clone()}</span> " "
                            <span class="mono">{key.clone()}</span>
                            <span class="muted">{format!(" · {} field{}", r.fields.len(), if r.fields.len() == 1 { "" } else { "s" })}</span>
                            {(!r.compared_by.is_empty()).then(|| view! {
                                <span class="muted" data-testid="compared-by">{format!(" · compared by {}", r.compared_by)}</span>
                            })}
                        </summary>
                        {if split {
                            Either::Left(view! {
                                <table class="split">
                                    <thead><tr><th scope="col">"Field"</th><th scope="col">{format!("− {before_label}")}</th><th scope="col">{format!("+ {after_label}")}</th></tr></thead>
                                    <tbody>
                                        {r.fields.into_iter().map(|f| view! {
                                            <tr>
                                                <th scope="row" class="mono">{f.path}</th>
                                                <td class="del mono">{f.before.unwrap_or_else(|| "(absent)".into())}</td>
                                                <td class="ins mono">{f.after.unwrap_or_else(|| "(absent)".into())}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            })
                        } else {
                            Either::Right(view! {
                                <div class="unified mono">
                                    {r.fields.into_iter().map(|f| view! {
                                        <div class="hunk">
                                            <div class="path">{format!("@@ {}", f.path)}</div>
                                            {f.before.map(|b| view! { <div class="del"><span class="sign">"− "</span>{b}</div> })}
                                            {f.after.map(|a| view! { <div class="ins"><span class="sign">"+ "</span>{a}</div> })}
                                        </div>
                                    }).collect_view()}
                                </div>
                            })
                        }}
                    </details>
                }
            }).collect_view()}
        </div>
    })
}

/// Rollback: pick a known-good revision, see what would change, say why, confirm.
#[component]
fn RollbackDialog(
    name: Memo<String>,
    detail: Resource<Result<AppDetail, crate::model::AppError>>,
) -> impl IntoView {
    let query = use_query_map();
    let chosen = Memo::new(move |_| query.with(|q| q.get("revision").unwrap_or_default()));
    let revisions = Resource::new(move || name.get(), known_good);
    let rollback = ServerAction::<Rollback>::new();
    report(rollback.value());
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(_)) = rollback.value().get() {
            navigate(
                &format!("/applications/{}", name.get_untracked()),
                Default::default(),
            );
        }
    });
    let preview = Resource::new(
        move || (name.get(), chosen.get()),
        move |(n, to)| async move {
            if to.is_empty() {
                return Ok(None);
            }
            let running = detail
                .await
                .ok()
                .and_then(|d| d.pin.map(|p| p.revision).or(d.deployed_sha));
            match running {
                Some(from) if from != to => {
                    application_diff(n, DiffQuery { from, to }).await.map(Some)
                }
                _ => Ok(None),
            }
        },
    );
    view! {
        <div class="backdrop">
            <section class="dialog" role="dialog" aria-modal="true" aria-labelledby="rollback-title" data-testid="rollback-dialog">
                <h2 id="rollback-title">{move || format!("Roll back {}", name.get())}</h2>
                <p class="muted">"Known-good revisions synced and became healthy. Rolling back applies the stored rendering (Git is not needed) and pins the application there until someone unpins it."</p>
                <Transition fallback=|| view! { <p class="muted">"Loading revisions…"</p> }>
                    <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                        {move || {
                            let (n, current) = (name.get(), chosen.get());
                            Suspend::new(async move {
                            revisions.await.map(|revs| {
                                if revs.is_empty() {
                                    return Either::Left(view! { <p class="notice">"No known-good revision yet: a revision becomes one when it syncs and turns healthy."</p> });
                                }
                                Either::Right(view! {
                                    <ul class="revisions" role="list">
                                        {revs.into_iter().map(|r| {
                                            let href = format!("/applications/{n}?{}", query_string(&[("dialog", "rollback"), ("revision", &r.revision)]));
                                            let selected = r.revision == current;
                                            view! {
                                                <li class:selected=selected data-revision=r.revision.clone()>
                                                    <a href=href aria-current=selected.then_some("true")>
                                                        <Sha sha=r.revision.clone() />
                                                        " " {r.title.clone().unwrap_or_default()}
                                                    </a>
                                                    " " <SignatureBadge signature=r.signature.clone() />
                                                    <span class="muted">{format!(" · deployed by {} · {}", r.deployed_by, crate::components::widgets::utc(r.deployed_at))}</span>
                                                    {r.current.then(|| view! { " " <span class="status ok">"running now"</span> })}
                                                </li>
                                            }
                                        }).collect_view()}
                                    </ul>
                                })
                            })
                        })}}
                    </ErrorBoundary>
                </Transition>
                {move || (!chosen.get().is_empty()).then(|| view! {
                    <h3>"What changes"</h3>
                    <Transition fallback=|| view! { <p class="muted">"Comparing…"</p> }>
                        <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                            {move || Suspend::new(async move {
                                preview.await.map(|p| match p {
                                    Some(d) => Either::Left(view! { <Diff diff=d split=false focus=String::new() /> }),
                                    None => Either::Right(view! { <p class="notice">"This revision is what runs now; rolling back re-applies it and pins it."</p> }),
                                })
                            })}
                        </ErrorBoundary>
                    </Transition>
                    <ActionForm action=rollback attr:class="confirm">
                        <input type="hidden" name="name" value=name.get_untracked() />
                        <input type="hidden" name="revision" value=chosen.get_untracked() />
                        <label for="rollback-reason">"Reason (recorded in the audit ledger)"</label>
                        <input id="rollback-reason" name="reason" type="text" required placeholder="e.g. checkout errors since the last deploy" />
                        <button type="submit" class="button danger" data-testid="rollback-confirm">{format!("Roll back to {}", &chosen.get_untracked()[..7.min(chosen.get_untracked().len())])}</button>
                    </ActionForm>
                })}
                <p><a href=move || format!("/applications/{}", name.get())>"Cancel"</a></p>
            </section>
        </div>
    }
}
