//! Approvals: sync requests waiting for a decision, across applications.

use leptos::prelude::*;
use leptos_meta::Title;

/// The Approvals page.
#[component]
pub fn ApprovalsPage() -> impl IntoView {
    view! {
        <Title text="Approvals" />
        <h1>"Approvals"</h1>
        <section class="empty">
            <h2>"Nothing is waiting for approval"</h2>
            <p>
                "When Git moves for an application on the manual sync policy, a sync request bound "
                "to that revision appears here for deployers to approve or reject."
            </p>
        </section>
    }
}
