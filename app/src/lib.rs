//! Tidemark's user interface: the Leptos app shell, its pages, the DTOs shared by browser and
//! server, and the server functions (plus, under `ssr`, the port traits the server implements).

#![recursion_limit = "256"]

pub mod api;
pub mod components;
pub mod model;
pub mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path, SsrMode,
};

use crate::components::layout::Shell;
use crate::pages::{
    application::ApplicationPage, applications::ApplicationsPage, approvals::ApprovalsPage,
    audit::AuditPage, login::LoginPage, not_found::NotFoundPage,
};

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <AutoReload options=options.clone() />
                // `/pkg/tidemark.<hash>.css` in a release build (see `http::assets`).
                <HashedStylesheet options=options.clone() id="leptos" />
                <HydrationScripts options />
                // Progressive enhancements that need no WASM (see js/enhance.js).
                <script inner_html=include_str!("js/enhance.js")></script>
                <MetaTags />
            </head>
            <body>
                <App />
                // Server-rendered only (never hydrated, no WASM): js/enhance.js drives them.
            <footer class="footer">
                <button type="button" class="link" data-action="shortcuts" aria-haspopup="dialog">"Keyboard shortcuts (?)"</button>
            </footer>
            <dialog id="shortcuts" aria-labelledby="shortcuts-title">
                <h2 id="shortcuts-title">"Keyboard shortcuts"</h2>
                <dl class="shortcuts">
                    <div><dt><kbd>"/"</kbd></dt><dd>"Search applications"</dd></div>
                    <div><dt><kbd>"?"</kbd></dt><dd>"Show or hide this list"</dd></div>
                    <div><dt><kbd>"g"</kbd>" "<kbd>"a"</kbd></dt><dd>"Go to Applications"</dd></div>
                    <div><dt><kbd>"g"</kbd>" "<kbd>"p"</kbd></dt><dd>"Go to Approvals"</dd></div>
                    <div><dt><kbd>"g"</kbd>" "<kbd>"u"</kbd></dt><dd>"Go to the Audit ledger"</dd></div>
                </dl>
                <form method="dialog"><button type="submit" class="button">"Close"</button></form>
            </dialog>
            </body>
        </html>
    }
}

/// The root component: stylesheet, title, navigation and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser: this marks the moment the client has taken over the
    // server-rendered page (browser tests wait for it before interacting).
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Title formatter=|page: String| {
            if page.is_empty() { "Tidemark".to_string() } else { format!("{page} · Tidemark") }
        } />
        <Router>
            <Shell>
                <Routes fallback=NotFoundPage>
                    // Async SSR: data pages arrive complete, so they also work without WASM.
                    <Route path=path!("/") view=ApplicationsPage ssr=SsrMode::Async />
                    <Route
                        path=path!("/applications")
                        view=ApplicationsPage
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/applications/:name")
                        view=ApplicationPage
                        ssr=SsrMode::Async
                    />
                    <Route path=path!("/approvals") view=ApprovalsPage ssr=SsrMode::Async />
                    <Route path=path!("/audit") view=AuditPage ssr=SsrMode::Async />
                    <Route path=path!("/login") view=LoginPage ssr=SsrMode::Async />
                </Routes>
            </Shell>
        </Router>
    }
}

/// WASM entry point: attaches the client to the server-rendered DOM.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
