//! Applications: every application Tidemark manages, with a filter that narrows the list as
//! you type (and, before the WASM loads, on submit through `?q=`).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::list_applications;
use crate::model::AppSummary;

/// The Applications page.
#[component]
pub fn ApplicationsPage() -> impl IntoView {
    let apps = Resource::new(|| (), |_| list_applications());
    let initial = use_query_map().with_untracked(|q| q.get("q").unwrap_or_default());
    let query = RwSignal::new(initial);

    view! {
        <Title text="Applications" />
        <div class="page-head">
            <h1>"Applications"</h1>
            <form class="filter" method="get" action="/applications" role="search">
                <label for="app-filter">"Filter"</label>
                <input
                    id="app-filter"
                    name="q"
                    type="search"
                    placeholder="name, project, cluster…"
                    autocomplete="off"
                    prop:value=move || query.get()
                    on:input=move |ev| query.set(event_target_value(&ev))
                />
            </form>
        </div>
        <Transition fallback=|| view! { <p class="muted">"Loading applications…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    apps.await.map(|apps| view! { <ApplicationTable apps query /> })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn ApplicationTable(apps: Vec<AppSummary>, query: RwSignal<String>) -> impl IntoView {
    if apps.is_empty() {
        return view! { <EmptyState /> }.into_any();
    }
    let total = apps.len();
    let apps = StoredValue::new(apps);
    let shown = move || {
        let q = query.get();
        apps.with_value(|apps| {
            apps.iter()
                .filter(|a| a.matches(&q))
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    view! {
        <p class="muted" aria-live="polite" data-testid="app-count">
            {move || format!("Showing {} of {total} applications", shown().len())}
        </p>
        <table class="apps">
            <thead>
                <tr>
                    <th scope="col">"Name"</th>
                    <th scope="col">"Project"</th>
                    <th scope="col">"Source"</th>
                    <th scope="col">"Destination"</th>
                    <th scope="col">"Status"</th>
                    <th scope="col">"Sync policy"</th>
                </tr>
            </thead>
            <tbody>
                <For each=shown key=|a| a.name.clone() let:app>
                    <tr data-app=app.name.clone()>
                        <th scope="row">{app.name.clone()}</th>
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
                        <td><StatusBadges app=app.clone() /></td>
                        <td><span class="badge">{app.sync_policy.as_str()}</span></td>
                    </tr>
                </For>
            </tbody>
        </table>
    }
    .into_any()
}

/// Sync status and health as icon + label (never colour alone).
#[component]
fn StatusBadges(app: AppSummary) -> impl IntoView {
    let sync = app
        .sync_status
        .clone()
        .unwrap_or_else(|| "Not compared".into());
    let (sync_icon, sync_class) = match sync.as_str() {
        "Synced" => ("✓", "ok"),
        "OutOfSync" => ("≠", "warn"),
        _ => ("?", "unknown"),
    };
    let health = app.health.clone().unwrap_or_else(|| "Unknown".into());
    let (health_icon, health_class) = match health.as_str() {
        "Healthy" => ("♥", "ok"),
        "Progressing" => ("◔", "info"),
        "Degraded" | "Missing" => ("✕", "bad"),
        _ => ("?", "unknown"),
    };
    let title = app
        .health_message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_default();
    view! {
        <span class=format!("status {sync_class}")>
            <span aria-hidden="true">{sync_icon}" "</span>{sync}
        </span>
        " "
        <span class=format!("status {health_class}") title=title>
            <span aria-hidden="true">{health_icon}" "</span>{health}
        </span>
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

/// Errors from a failed load, readable and without internals.
#[component]
pub fn ErrorList(errors: ArcRwSignal<Errors>) -> impl IntoView {
    view! {
        <div class="error" role="alert">
            <p>"Could not load this page:"</p>
            <ul>
                {move || {
                    errors
                        .get()
                        .into_iter()
                        .map(|(_, e)| view! { <li>{e.to_string()}</li> })
                        .collect_view()
                }}
            </ul>
        </div>
    }
}
