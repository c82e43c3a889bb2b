//! The frame around every page: product name, primary navigation, main landmark.

use leptos::prelude::*;
use leptos_router::components::A;

/// Header with the product name and navigation, then the page in `<main>`.
#[component]
pub fn Shell(children: Children) -> impl IntoView {
    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="topbar">
            <a class="brand" href="/" aria-label="Tidemark home">
                <img src="/logo.svg" alt="" width="28" height="28" />
                <span>"Tidemark"</span>
            </a>
            <nav aria-label="Primary">
                <ul>
                    <li><A href="/applications">"Applications"</A></li>
                    <li><A href="/approvals">"Approvals"</A></li>
                    <li><A href="/audit">"Audit"</A></li>
                </ul>
            </nav>
        </header>
        <main id="main" tabindex="-1">{children()}</main>
    }
}
