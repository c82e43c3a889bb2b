//! Approvals: sync requests waiting for a decision (or a "Sync now"), across applications,
//! each with Approve / Reject when the viewer may decide, otherwise the reason they cannot.

use leptos::either::Either;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::open_requests;
use crate::components::widgets::{ErrorList, Reload, RequestPanel};

/// The Approvals page.
#[component]
pub fn ApprovalsPage() -> impl IntoView {
    let reload = Reload::provide();
    let requests = Resource::new(move || reload.get(), |_| open_requests());
    view! {
        <Title text="Approvals" />
        <div class="page-head"><h1>"Approvals"</h1></div>
        <Transition fallback=|| view! { <p class="muted">"Loading sync requests…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    requests.await.map(|list| {
                        if list.items.is_empty() {
                            return Either::Left(view! {
                                <section class="empty">
                                    <h2>"Nothing is waiting for approval"</h2>
                                    <p>
                                        "When Git moves for an application on the manual sync policy, a sync request bound "
                                        "to that revision and its rendered manifests appears here for deployers to approve or reject."
                                    </p>
                                </section>
                            }
                            );
                        }
                        let now = list.now;
                        Either::Right(view! {
                            <p class="muted">{format!("{} open sync request{}", list.items.len(), if list.items.len() == 1 { "" } else { "s" })}</p>
                            <div class="requests" data-testid="requests">
                                {list.items.into_iter().map(|req| view! { <RequestPanel req now show_app=true /> }).collect_view()}
                            </div>
                        }
                        )
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}
