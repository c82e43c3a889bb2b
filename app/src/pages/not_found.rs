//! The page for unknown paths.

use leptos::prelude::*;
use leptos_meta::Title;

/// Shown for any path no route matches; the server answers 404.
#[component]
pub fn NotFoundPage() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found" />
        <h1>"Page not found"</h1>
        <p>"There is nothing at this address. " <a href="/applications">"Go to Applications"</a></p>
    }
}
