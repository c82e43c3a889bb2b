//! Applications: every application Tidemark manages, filtered and paged on the server (keyset
//! by name), so the page stays fast at tens of thousands of applications. Filters are a GET
//! form and paging is links: it works before (and without) the WASM.

use leptos::either::{Either, EitherOf3};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::application_page;
use crate::components::widgets::{ago, query_string, ErrorList, GetForm, StatusBadges};
use crate::model::{AppListPage, AppListQuery, AppSummary};

/// The Applications page.
#[component]
pub fn ApplicationsPage() -> impl IntoView {
    let params = use_query_map();
    let query = Memo::new(move |_| {
        params.with(|p| AppListQuery {
            q: p.get("q").unwrap_or_default(),
            project: p.get("project").unwrap_or_default(),
            status: p.get("status").unwrap_or_default(),
            health: p.get("health").unwrap_or_default(),
            after: p.get("after").unwrap_or_default(),
        })
    });
    let page = Resource::new(move || query.get(), application_page);
    let select =
        move |name: &'static str, label: &'static str, options: &'static [&'static str]| {
            view! {
                <label>
                    {label}
                    <select name=name>
                        <option value="">"Any"</option>
                        {options
                            .iter()
                            .map(|o| {
                                let selected = move || query.with(|q| field(q, name) == *o);
                                view! { <option value=*o selected=selected>{*o}</option> }
                            })
                            .collect_view()}
                    </select>
                </label>
            }
        };

    view! {
        <Title text="Applications" />
        <div class="page-head">
            <h1>"Applications"</h1>
        </div>
        <GetForm action="/applications" class="filters">
            <label>
                "Search"
                <input
                    id="app-filter"
                    name="q"
                    type="search"
                    placeholder="name, project, cluster…"
                    autocomplete="off"
                    prop:value=move || query.get().q
                />
            </label>
            <Transition fallback=|| ()>
                {move || {
                    let current = query.with(|q| q.project.clone());
                    Suspend::new(async move {
                    let projects = page.await.map(|p| p.projects).unwrap_or_default();
                    view! {
                        <label>
                            "Project"
                            <select name="project">
                                <option value="">"Any"</option>
                                {projects
                                    .into_iter()
                                    .map(|p| {
                                        let selected = current == p;
                                        view! { <option value=p.clone() selected=selected>{p.clone()}</option> }
                                    })
                                    .collect_view()}
                            </select>
                        </label>
                    }
                })}}
            </Transition>
            {select("status", "Sync status", &["Synced", "OutOfSync", "Unknown"])}
            {select("health", "Health", &["Healthy", "Progressing", "Degraded", "Missing", "Unknown"])}
            <button type="submit" class="button">"Filter"</button>
            <a href="/applications" class="clear">"Clear"</a>
        </GetForm>
        <Transition fallback=|| view! { <p class="muted">"Loading applications…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || {
                    let query = query.get();
                    Suspend::new(async move {
                        page.await.map(|p| view! { <ApplicationTable page=p query /> })
                    })
                }}
            </ErrorBoundary>
        </Transition>
    }
}

fn field<'a>(q: &'a AppListQuery, name: &str) -> &'a str {
    match name {
        "status" => &q.status,
        "health" => &q.health,
        "project" => &q.project,
        _ => &q.q,
    }
}

#[component]
fn ApplicationTable(page: AppListPage, query: AppListQuery) -> impl IntoView {
    let filtered = !(query.q.is_empty()
        && query.project.is_empty()
        && query.status.is_empty()
        && query.health.is_empty());
    if page.items.is_empty() {
        return if filtered {
            EitherOf3::A(view! {
                <section class="empty">
                    <h2>"No application matches these filters"</h2>
                    <p><a href="/applications">"Clear the filters"</a> " to see all applications."</p>
                </section>
            })
        } else {
            EitherOf3::B(view! { <EmptyState /> })
        };
    }
    let now = page.now;
    let base = [
        ("q", query.q.as_str()),
        ("project", query.project.as_str()),
        ("status", query.status.as_str()),
        ("health", query.health.as_str()),
    ];
    let next = page.next.as_ref().map(|after| {
        let mut pairs = base.to_vec();
        pairs.push(("after", after));
        format!("/applications?{}", query_string(&pairs))
    });
    let first = (!query.after.is_empty()).then(|| format!("/applications?{}", query_string(&base)));
    let shown = page.items.len();
    EitherOf3::C(view! {
        <p class="muted" aria-live="polite" data-testid="app-count">
            {format!("{} · showing {shown}{}", if page.total == 1 { "1 application matches".to_owned() } else { format!("{} applications match", page.total) },
                if query.after.is_empty() { String::new() } else { format!(" after {}", query.after) })}
        </p>
        <table class="apps">
            <thead>
                <tr>
                    <th scope="col">"Name"</th>
                    <th scope="col">"Project"</th>
                    <th scope="col">"Source"</th>
                    <th scope="col">"Destination"</th>
                    <th scope="col">"Status"</th>
                    <th scope="col">"Last deploy"</th>
                    <th scope="col">"Approvals"</th>
                    <th scope="col">"Policy"</th>
                </tr>
            </thead>
            <tbody>
                {page.items.into_iter().map(|app| view! { <AppRow app now /> }).collect_view()}
            </tbody>
        </table>
        <nav class="pager" aria-label="Pages">
            {first.map(|href| view! { <a href=href>"← First page"</a> })}
            {next.map(|href| view! { <a href=href rel="next" data-testid="next-page">"Next page →"</a> })}
        </nav>
    })
}

#[component]
fn AppRow(app: AppSummary, now: i64) -> impl IntoView {
    let href = format!("/applications/{}", app.name);
    view! {
        <tr data-app=app.name.clone()>
            <th scope="row"><a href=href.clone()>{app.name.clone()}</a></th>
            <td>{app.project.clone()}</td>
            <td>
                <span class="mono" title=app.repo_url.clone()>{app.repository.clone()}</span>
                " / "
                <span class="mono">{app.path.clone()}</span>
                " @ "
                <span class="mono">{app.target_revision.clone()}</span>
                {app.target_sha.clone().map(|sha| view! {
                    " " <span class="mono muted" title=sha.clone()>{sha[..7.min(sha.len())].to_string()}</span>
                })}
                {app.git_error.clone().map(|e| view! {
                    <p class="git-error" role="status">
                        <span aria-hidden="true">"⚠ "</span>
                        <strong>"Git: "</strong>{e}
                    </p>
                })}
            </td>
            <td>{format!("{} / {}", app.cluster, app.namespace)}</td>
            <td>
                <StatusBadges app=app.clone() />
                {app.drift_since.map(|since| view! {
                    " " <span class="status warn" title=crate::components::widgets::utc(since) data-testid="drift">
                        <span aria-hidden="true">"≠ "</span>{format!("Drift {}", ago(since, now).replace(" ago", ""))}
                    </span>
                })}
            </td>
            <td>
                {match (app.last_deploy_by.clone(), app.last_deploy_at) {
                    (Some(by), Some(at)) => Either::Left(view! {
                        <span title=crate::components::widgets::utc(at)>{format!("{by}, {}", ago(at, now))}</span>
                    }),
                    _ => Either::Right(view! { <span class="muted">"never"</span> }),
                }}
            </td>
            <td>
                {match app.pending {
                    Some((_, got, need)) => Either::Left(view! {
                        <a href=href.clone() class="status info" data-testid="pending">
                            <span aria-hidden="true">"◇ "</span>{format!("{got} of {need}")}
                        </a>
                    }),
                    None => Either::Right(view! { <span class="muted">"—"</span> }),
                }}
            </td>
            <td><span class="badge">{app.sync_policy.as_str()}</span></td>
        </tr>
    }
}

#[component]
fn EmptyState() -> impl IntoView {
    view! {
        <section class="empty" aria-labelledby="empty-title">
            <h2 id="empty-title">"No applications yet"</h2>
            <p>
                "An application is a path in a Git repository deployed to a cluster namespace. "
                "Declare one in " <code>"tidemark.toml"</code> " and restart Tidemark:"
            </p>
            <pre><code>{EXAMPLE_CONFIG}</code></pre>
        </section>
    }
}

const EXAMPLE_CONFIG: &str = r#"[[repositories]]
name = "examples"
url = "https://github.com/example/gitops.git"

[[clusters]]
name = "sandbox"
url = "http://127.0.0.1:6443"

[[applications]]
name = "guestbook"
repository = "examples"
path = "apps/guestbook"
cluster = "sandbox"
namespace = "guestbook""#;
