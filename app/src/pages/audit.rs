//! Audit: the ledger of who asked Tidemark to do what, when and why.

use leptos::prelude::*;
use leptos_meta::Title;

/// The Audit page.
#[component]
pub fn AuditPage() -> impl IntoView {
    view! {
        <Title text="Audit" />
        <h1>"Audit"</h1>
        <section class="empty">
            <h2>"The ledger is empty"</h2>
            <p>
                "Every sign-in, approval, sync and rollback is recorded here, in order, "
                "in a hash chain that shows any later edit."
            </p>
        </section>
    }
}
