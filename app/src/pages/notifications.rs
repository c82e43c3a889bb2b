//! The Audit page's Notifications tab (admins): where Tidemark sends alerts and what it sent —
//! the latest deliveries with their attempts and last error, so a silent Slack channel can be
//! explained. Rendered on the server only (`render`): the tab is read-only, and its tables stay
//! out of the WASM, which has a size budget.

use leptos::either::Either;
use leptos::prelude::*;

use crate::components::widgets::{utc, When};
use crate::model::{DeliveriesView, DeliveryView};

/// The tab's content as HTML.
pub fn render(view: DeliveriesView, undelivered: bool) -> String {
    view! { <Deliveries view undelivered /> }.to_html()
}

#[component]
fn Deliveries(view: DeliveriesView, undelivered: bool) -> impl IntoView {
    let now = view.now;
    let summary = format!(
        "{} delivered · {} waiting for a retry · {} given up",
        view.delivered, view.pending, view.failed
    );
    let targets = if view.targets.is_empty() {
        Either::Left(view! {
            <p class="notice">"No notification targets are configured: add [[notifications.targets]] and [[notifications.subscriptions]] to tidemark.toml (see the README, \"Alerts\")."</p>
        })
    } else {
        Either::Right(view! {
            <ul class="targets" data-testid="targets">
                {view.targets.into_iter().map(|t| view! {
                    <li>
                        <strong>{t.name}</strong> " " <span class="badge">{t.kind}</span>
                        <ul>{t.subscriptions.into_iter().map(|s| view! { <li class="muted">{s}</li> }).collect_view()}</ul>
                    </li>
                }).collect_view()}
            </ul>
        })
    };
    let rows = if view.deliveries.is_empty() {
        Either::Left(view! { <p class="muted">"Nothing to show yet."</p> })
    } else {
        Either::Right(view! {
            <table class="audit" data-testid="deliveries">
                <thead>
                    <tr>
                        <th scope="col">"Event"</th>
                        <th scope="col">"Application"</th>
                        <th scope="col">"Target"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Attempts"</th>
                        <th scope="col">"Last error"</th>
                    </tr>
                </thead>
                <tbody>
                    {view.deliveries.into_iter().map(|d| view! { <Row d now /> }).collect_view()}
                </tbody>
            </table>
        })
    };
    view! {
        <h2>"Targets"</h2>
        {targets}
        <h2>"Latest deliveries"</h2>
        <nav class="tabs" aria-label="Deliveries shown">
            <a href="/audit?view=notifications" aria-current=(!undelivered).then_some("page")>"All"</a>
            <a href="/audit?view=notifications&show=undelivered" aria-current=undelivered.then_some("page")>"Not delivered"</a>
        </nav>
        <p class="muted" data-testid="delivery-summary">{summary}</p>
        {rows}
    }
}

#[component]
fn Row(d: DeliveryView, now: i64) -> impl IntoView {
    let tone = match d.status.as_str() {
        "delivered" => "ok",
        "failed" => "bad",
        _ => "warn",
    };
    let status = match d.status.as_str() {
        "pending" if d.attempts > 0 => format!("retry at {} UTC", utc(d.next_attempt_at)),
        "pending" => "queued".to_owned(),
        "failed" => "given up".to_owned(),
        other => other.to_owned(),
    };
    view! {
        <tr data-status=d.status.clone()>
            <td><span class="badge">{d.trigger}</span> " " <When at=d.occurred_at now /></td>
            <td><a href=format!("/applications/{}?tab=timeline#{}", d.application, d.entry)>{d.application.clone()}</a></td>
            <td>{d.target}</td>
            <td><span class=format!("status {tone}")>{status}</span></td>
            <td class="mono">{d.attempts}</td>
            <td class="mono">{d.last_error.unwrap_or_default()}</td>
        </tr>
    }
}
