//! Sign-in: the single sign-on button and the local form, with a clear message for every way a
//! sign-in can fail. Plain form posts and links: it works before (and without) the WASM.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::login_options;

/// What the sign-in page says for each `?error=` code the server redirects with.
pub fn error_message(code: &str, retry: Option<&str>) -> String {
    match code {
        "bad_credentials" => "Wrong user name or password.".into(),
        "throttled" => format!(
            "Too many failed sign-ins for this account or address. Try again in {} seconds.",
            retry.unwrap_or("a few hundred")
        ),
        "local_off" => "Local sign-in is switched off here; use single sign-on.".into(),
        "sso_off" => "Single sign-on is not configured here.".into(),
        "provider_unreachable" => "The identity provider could not be reached. Try again; if it keeps failing, ask an administrator to check auth.oidc.issuer_url.".into(),
        "stale" => "This sign-in expired or was already used. Start again.".into(),
        "state" => "The answer from the identity provider does not belong to the sign-in this browser started. Start again.".into(),
        "refused" => "The identity provider refused the sign-in.".into(),
        "exchange" => "The identity provider did not accept the sign-in code. Start again.".into(),
        "token" => "The identity provider's ID token failed validation, so you are not signed in. The reason is in the audit ledger and the server log.".into(),
        _ => "Sign-in failed. Start again.".into(),
    }
}

/// The sign-in page.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let get = move |key: &str| query.with_untracked(|q| q.get(key));
    let next = get("next").unwrap_or_else(|| "/applications".into());
    let error = get("error").map(|code| error_message(&code, get("retry").as_deref()));
    let signed_out = get("signed_out").is_some();
    let options = Resource::new(|| (), |_| login_options());
    let sso_href = format!(
        "/auth/oidc/start?next={}",
        next.replace('%', "%25")
            .replace('&', "%26")
            .replace('#', "%23")
            .replace('?', "%3F")
    );

    view! {
        <Title text="Sign in" />
        <section class="signin" aria-labelledby="signin-title">
            <h1 id="signin-title">"Sign in to Tidemark"</h1>
            {signed_out.then(|| view! { <p class="notice" role="status">"You are signed out."</p> })}
            {error.map(|e| view! { <p class="alert" role="alert" id="signin-error">{e}</p> })}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new({
                    let next = next.clone();
                    let sso_href = sso_href.clone();
                    async move {
                        let opts = options.await.unwrap_or(crate::model::SignInOptions { sso: None, local: true });
                        view! {
                            {opts.sso.map(|label| view! {
                                <a class="button primary sso" href=sso_href.clone() id="sso" rel="external">{format!("Sign in with {label}")}</a>
                            })}
                            {opts.local.then(|| view! {
                                <form class="local-signin" method="post" action="/auth/login">
                                    <input type="hidden" name="next" value=next.clone() />
                                    <label for="username">"User name"</label>
                                    <input id="username" name="username" type="text" autocomplete="username" required />
                                    <label for="password">"Password"</label>
                                    <input id="password" name="password" type="password" autocomplete="current-password" required />
                                    <button type="submit" class="button">"Sign in"</button>
                                </form>
                            })}
                        }
                    }
                })}
            </Suspense>
        </section>
    }
}
