//! The frame around every page: product name, primary navigation, main landmark.

use leptos::either::Either;
use leptos::prelude::*;
use leptos_router::components::A;

use crate::api::whoami;
use crate::components::widgets::{Flash, Outcome};

/// Header with the product name and navigation, then the page in `<main>`.
#[component]
pub fn Shell(children: Children) -> impl IntoView {
    let flash = RwSignal::new(None);
    provide_context(Flash(flash));
    // A message belongs to the page it was shown on.
    let location = leptos_router::hooks::use_location();
    Effect::new(move |previous: Option<String>| {
        let path = location.pathname.get();
        if previous.is_some_and(|p| p != path) {
            flash.set(None);
        }
        path
    });
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
            <UserMenu />
        </header>
        <main id="main" tabindex="-1">
            <div class="flash"><Outcome result=flash.into() /></div>
            {children()}
        </main>
    }
}

/// Who is signed in, with which role, and a sign-out button (a plain form post).
#[component]
fn UserMenu() -> impl IntoView {
    let me = Resource::new(|| (), |_| whoami());
    view! {
        <div class="usermenu">
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match me.await.ok().flatten() {
                        Some(v) => {
                            let role = v.role.map_or("no role", |r| r.as_str());
                            let admin = v.role == Some(crate::model::Role::Admin);
                            Either::Left(view! {
                                <a href="/audit?view=notifications" class="admin-link" hidden=!admin>"Notifications"</a>
                                <span class="who" id="whoami" title=format!("{} ({})", v.username, v.method)>
                                    {v.display_name}
                                </span>
                                <span class="badge role" id="role">{role}</span>
                                <form method="post" action="/auth/logout" class="inline">
                                    <button type="submit" class="link">"Sign out"</button>
                                </form>
                            }
                                )
                        }
                        None => Either::Right(view! { <a href="/login" class="signin-link">"Sign in"</a> }),
                    }
                })}
            </Suspense>
        </div>
    }
}
