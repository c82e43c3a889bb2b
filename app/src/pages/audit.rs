//! Audit: the ledger of who asked Tidemark to do what, when and why — newest first, filterable,
//! exportable, with the hash chain's state. Filters and paging are plain links and a GET form,
//! so the page works before (and without) the WASM. Its Notifications tab (admins) shows what
//! Tidemark told whom; that tab arrives rendered by the server (`pages::notifications`).

use leptos::either::Either;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::audit_page;
use crate::components::widgets::{self, ErrorList};
use crate::model::{AuditQuery, AuditView};

/// The page's filters (and `extra`) as a query string.
fn query_string(q: &AuditQuery, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("actor", q.actor.as_str()),
        ("action", q.action.as_str()),
        ("application", q.application.as_str()),
    ];
    pairs.extend_from_slice(extra);
    widgets::query_string(&pairs)
}

/// The Audit page.
#[component]
pub fn AuditPage() -> impl IntoView {
    let params = use_query_map();
    let query = Memo::new(move |_| {
        params.with(|p| AuditQuery {
            actor: p.get("actor").unwrap_or_default(),
            action: p.get("action").unwrap_or_default(),
            application: p.get("application").unwrap_or_default(),
            cursor: p.get("cursor").unwrap_or_default(),
            view: p.get("view").unwrap_or_default(),
            show: p.get("show").unwrap_or_default(),
        })
    });
    let page = Resource::new(move || query.get(), audit_page);

    view! {
        <Title text="Audit" />
        <div class="page-head">
            <h1>"Audit"</h1>
        </div>
        <Transition fallback=|| view! { <p class="muted">"Loading the ledger…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || {
                    let query = query.get();
                    Suspend::new(async move {
                        page.await.map(|view| view! { <Ledger view query /> })
                    })
                }}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn Ledger(view: AuditView, query: AuditQuery) -> impl IntoView {
    let notifications = view.notifications.is_some();
    let tabs = view! {
        <nav class="tabs" aria-label="Audit views">
            <a href="/audit" aria-current=(!notifications).then_some("page")>"Ledger"</a>
            <a href="/audit?view=notifications" aria-current=notifications.then_some("page")>"Notifications"</a>
        </nav>
    };
    if let Some(html) = view.notifications {
        return Either::Left(view! { {tabs} <div inner_html=html /> });
    }
    let form = view! {
        <form class="filters" method="get" action="/audit" role="search">
            <label>"Actor" <input name="actor" placeholder="oidc:alice, local:admin…" value=query.actor.clone() /></label>
            <label>"Action" <input name="action" placeholder="sync, approve, sign_in…" value=query.action.clone() /></label>
            <label>"Application" <input name="application" value=query.application.clone() /></label>
            <button type="submit">"Filter"</button>
        </form>
    };
    let chain = if view.chain_ok {
        Either::Left(view! {
            <p class="chain ok" id="chain-status" role="status">
                {format!("✔ Hash chain verified through #{}", view.verified_through)}
            </p>
        })
    } else {
        Either::Right(view! {
            <p class="chain bad alert" id="chain-status" role="alert">
                {format!(
                    "✖ Hash chain broken at #{}: {} (intact through #{})",
                    view.first_bad.unwrap_or_default(),
                    view.problem.clone().unwrap_or_default(),
                    view.verified_through
                )}
            </p>
        })
    };
    let exports = query_string(&query, &[]);
    let sep = if exports.is_empty() { "" } else { "&" };
    let older = view
        .next
        .as_ref()
        .map(|c| format!("/audit?{}", query_string(&query, &[("cursor", c)])));
    let body = if view.entries.is_empty() {
        Either::Left(view! {
            <section class="empty">
                <h2>"No matching entries"</h2>
                <p>"Every sign-in, approval, sync and rollback is recorded here, in order. Clear the filters to see everything."</p>
            </section>
        })
    } else {
        Either::Right(view! {
            <table class="audit">
                <thead>
                    <tr>
                        <th scope="col">"#"</th>
                        <th scope="col">"Time (UTC)"</th>
                        <th scope="col">"Actor"</th>
                        <th scope="col">"Action"</th>
                        <th scope="col">"Target"</th>
                        <th scope="col">"Outcome"</th>
                        <th scope="col">"From"</th>
                    </tr>
                </thead>
                <tbody>
                    {view
                        .entries
                        .into_iter()
                        .map(|e| {
                            view! {
                                <tr data-seq=e.seq>
                                    <td class="mono">{e.seq}</td>
                                    <td class="mono"><time datetime=e.at.clone()>{e.at.replace('T', " ").replace('Z', "")}</time></td>
                                    <td title=e.actor_id.clone()>{e.actor_name} " " <span class="muted">{format!("({})", e.auth_method)}</span></td>
                                    <td title=e.details><span class="badge">{e.action}</span></td>
                                    <td class="mono">{e.target}</td>
                                    <td>{e.outcome}</td>
                                    <td class="mono">{e.source_ip}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        })
    };
    Either::Right(view! {
        {tabs}
        {form}
        {chain}
        <p class="exports">
            "Export: "
            <a href=format!("/api/v1/audit?format=jsonl&limit=10000{sep}{exports}") rel="external" download="audit.jsonl">"JSON Lines"</a>
            " · "
            <a href=format!("/api/v1/audit?format=csv&limit=10000{sep}{exports}") rel="external" download="audit.csv">"CSV"</a>
        </p>
        {body}
        {older.map(|href| view! { <p class="pager"><a href=href>"Older entries →"</a></p> })}
    })
}
