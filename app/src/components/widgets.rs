//! Small pieces every page uses: times, status badges, errors, flash messages, the sync-request
//! panel with its Approve / Reject forms.

use leptos::either::{Either, EitherOf3};
use leptos::prelude::*;
use leptos_router::components::Form;

use crate::api::{Approve, Reject, SyncNow};
use crate::model::{AppError, AppSummary, RequestView};

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01 (the inverse of [`civil`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The timeline cursor that starts a page at the end of `date` (`YYYY-MM-DD`, UTC): every
/// event and commit of that day and before. `None` when `date` is not a date.
pub fn cursor_at_end_of(date: &str) -> Option<String> {
    let mut parts = date.trim().splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || civil(days_from_civil(y, m, d)) != (y, m, d)
    {
        return None;
    }
    let end = (days_from_civil(y, m, d) + 1) * 86_400_000;
    // Events: keyset (occurred_at, id) below (end, max); commits: (committed_at, sha) below
    // (end, "~"), which sorts after every hex SHA.
    Some(format!("{end}:{}|{end}:~", i64::MAX))
}

/// `2026-11-26 18:30:05` (UTC) for a time in ms since the epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `2026-11-26T18:30:05Z`, for `<time datetime>`.
pub fn rfc3339(ms: i64) -> String {
    format!("{}Z", utc(ms).replace(' ', "T"))
}

/// "just now", "5 min ago", "3 h ago", "2 days ago" (relative to `now`).
pub fn ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=44 => "just now".into(),
        45..=5_399 => format!("{} min ago", (s + 30) / 60),
        5_400..=129_599 => format!("{} h ago", (s + 1800) / 3600),
        _ => format!("{} days ago", (s + 43_200) / 86_400),
    }
}

/// How long something lasted: "4 min", "2 h 5 min", "3 days".
pub fn duration(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    match m {
        0 => "under a minute".into(),
        1..=59 => format!("{m} min"),
        60..=2_879 => format!("{} h {} min", m / 60, m % 60),
        _ => format!("{} days", m / 1440),
    }
}

/// A time shown both ways: relative, with the absolute UTC time next to it. The relative part
/// is kept current in the browser every minute (`data-rel`, js/enhance.js).
#[component]
pub fn When(at: i64, now: i64) -> impl IntoView {
    let abs = utc(at);
    view! {
        <time datetime=rfc3339(at) title=format!("{abs} UTC") data-rel="">
            {ago(at, now)} " " <span class="abs">{format!("· {abs} UTC")}</span>
        </time>
    }
}

/// The first seven characters of a SHA (a chart version whole), monospaced, the full SHA on
/// hover.
#[component]
pub fn Sha(sha: String) -> impl IntoView {
    let short = crate::model::short_revision(&sha).to_owned();
    view! { <code class="sha" title=sha>{short}</code> }
}

/// A commit's signature verdict as icon + words: `✓ verified · alice@example.com`,
/// `? unknown key`, `✗ bad signature`, `– unsigned`; the key and detail on hover (worded on the
/// server, see [`crate::model::SignatureBadgeView`]). Nothing when not checked yet.
#[component]
pub fn SignatureBadge(signature: Option<crate::model::SignatureBadgeView>) -> impl IntoView {
    signature.map(|v| {
        view! {
            <span class=format!("status signature {}", v.tone) title=v.title data-signature=v.data>
                <span aria-hidden="true">{v.icon}" "</span>{v.label}
                {v.signer.map(|s| view! { " · " <span class="signer">{s}</span> })}
            </span>
        }
    })
}

/// Sync status and health as icon + label (never colour alone).
#[component]
pub fn StatusBadges(app: AppSummary) -> impl IntoView {
    let sync = app
        .sync_status
        .clone()
        .unwrap_or_else(|| "Not compared".into());
    let (sync_icon, sync_class) = match sync.as_str() {
        "Synced" => ("✓", "ok"),
        "OutOfSync" => ("≠", "warn"),
        _ => ("?", "unknown"),
    };
    let health = app.health.clone().unwrap_or_else(|| "Unknown".into());
    let (health_icon, health_class) = health_style(&health);
    let title = app
        .health_message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_default();
    view! {
        <span class=format!("status {sync_class}") data-sync=sync.clone()>
            <span aria-hidden="true">{sync_icon}" "</span>{sync.clone()}
        </span>
        " "
        <span class=format!("status {health_class}") title=title data-health=health.clone()>
            <span aria-hidden="true">{health_icon}" "</span>{health.clone()}
        </span>
        {app.pinned.then(|| view! {
            " " <span class="status warn pinned-badge"><span aria-hidden="true">"⚲ "</span>"Pinned"</span>
        })}
    }
}

/// Icon and tone of a health value.
pub fn health_style(health: &str) -> (&'static str, &'static str) {
    match health {
        "Healthy" => ("♥", "ok"),
        "Progressing" => ("◔", "info"),
        "Degraded" | "Missing" => ("✕", "bad"),
        _ => ("?", "unknown"),
    }
}

/// Errors from a failed load, readable and without internals, with a way forward.
#[component]
pub fn ErrorList(errors: ArcRwSignal<Errors>) -> impl IntoView {
    view! {
        <div class="error" role="alert">
            <p>"Could not load this page:"</p>
            <ul>
                {move || {
                    errors
                        .get()
                        .into_iter()
                        .map(|(_, e)| view! { <li>{e.to_string()}</li> })
                        .collect_view()
                }}
            </ul>
            <p><a href="">"Try again"</a> " · " <a href="/applications">"All applications"</a></p>
        </div>
    }
}

/// The outcome of an action, in place: what happened, or what went wrong and what to do.
#[component]
pub fn Outcome(result: Signal<Option<Result<String, AppError>>>) -> impl IntoView {
    move || {
        result.get().map(|r| match r {
            Ok(message) => Either::Left(view! { <p class="notice" role="status" data-testid="outcome">{message}</p> }),
            Err(e) => Either::Right(view! {
                <p class="alert" role="alert" data-testid="outcome">{e.to_string()}
                    {matches!(e, AppError::Conflict(_)).then_some(" Reload the page to see the current state.")}
                </p>
            }
            ),
        })
    }
}

/// The last action's outcome, shown at the top of the page (provided by the shell).
#[derive(Clone, Copy)]
pub struct Flash(pub RwSignal<Option<Result<String, AppError>>>);

/// Bumped after every action so the page reloads its data (provided by each page).
#[derive(Clone, Copy)]
pub struct Reload(pub RwSignal<u64>);

impl Reload {
    /// Provides a fresh counter to the page and returns it, with the page's request actions
    /// ([`RequestActions`]).
    pub fn provide() -> RwSignal<u64> {
        let signal = RwSignal::new(0);
        provide_context(Reload(signal));
        RequestActions::provide();
        signal
    }
}

/// The decisions on sync requests, owned by the page rather than by a request's panel: a live
/// update can re-render or remove the panel while its action runs (the approval that completes
/// a request syncs it and closes the panel), and the outcome must still reach the flash.
#[derive(Clone, Copy)]
pub struct RequestActions {
    pub approve: ServerAction<Approve>,
    pub reject: ServerAction<Reject>,
    pub sync_now: ServerAction<SyncNow>,
}

impl RequestActions {
    fn provide() {
        let actions = RequestActions {
            approve: ServerAction::<Approve>::new(),
            reject: ServerAction::<Reject>::new(),
            sync_now: ServerAction::<SyncNow>::new(),
        };
        report(actions.approve.value());
        report(actions.reject.value());
        report(actions.sync_now.value());
        provide_context(actions);
    }

    /// The page's actions (or, on a page without them, ones owned by the caller).
    fn of_page() -> Self {
        use_context::<RequestActions>().unwrap_or_else(|| {
            Self::provide();
            expect_context::<RequestActions>()
        })
    }
}

/// Shows an action's outcome in the flash area and makes the page reload its data.
pub fn report(value: impl Get<Value = Option<Result<String, AppError>>> + Send + Sync + 'static) {
    let flash = use_context::<Flash>();
    let reload = use_context::<Reload>();
    Effect::new(move |_| {
        if let Some(result) = value.get() {
            if let Some(Flash(f)) = flash {
                f.set(Some(result));
            }
            if let Some(Reload(r)) = reload {
                r.update(|n| *n += 1);
            }
        }
    });
}

/// A sync request with its approvals and, when the viewer may decide, Approve and Reject
/// (with a reason); otherwise a line saying why not. `done` is bumped after each decision so
/// the page reloads its data.
#[component]
pub fn RequestPanel(req: RequestView, now: i64, #[prop(optional)] show_app: bool) -> impl IntoView {
    let RequestActions {
        approve,
        reject,
        sync_now,
    } = RequestActions::of_page();
    let id = req.id;
    let cause = match req.cause.as_str() {
        "drift" => "live state drifted from Git",
        "rollback" => "rollback",
        _ => "new revision",
    };
    let approvers = if req.approvals.is_empty() {
        "none yet".to_owned()
    } else {
        req.approvals
            .iter()
            .map(|(who, _)| who.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let waiting = req.status == crate::model::RequestStatus::Approved;
    let app = req.application.clone();
    view! {
        <section class="request" aria-labelledby=format!("req-{id}") data-request=id>
            <h3 id=format!("req-{id}")>
                {show_app.then(|| view! { <a href=format!("/applications/{app}")>{app.clone()}</a> " · " })}
                {format!("Sync request #{id}")}
                <span class="status info">{format!("{} of {} approvals", req.approvals.len(), req.required)}</span>
            </h3>
            <p>
                "Deploy " <Sha sha=req.revision.clone() /> " " <SignatureBadge signature=req.signature.clone() />
                {req.title.clone().map(|t| view! { " · last change here: “" {t} "”" })}
                {req.author.clone().map(|a| view! { " by " {a} })}
                {format!(" · cause: {cause}")}
                {req.requested_by.clone().map(|r| view! { " · asked by " {r} })}
                " · opened " <When at=req.created_at now />
            </p>
            <p class="muted">{format!("Approved by: {approvers}")}</p>
            {match req.why_not.clone() {
                Some(why) => EitherOf3::A(view! {
                    <p class="why-not" data-testid="why-not"><span aria-hidden="true">"⊘ "</span>{format!("You cannot decide this request: {why}.")}</p>
                }),
                None if waiting => EitherOf3::B(view! {
                    <ActionForm action=sync_now attr:class="decide">
                        <input type="hidden" name="request" value=id />
                        <button type="submit" class="button primary">"Sync now"</button>
                    </ActionForm>
                }),
                None => EitherOf3::C(view! {
                    <div class="decide">
                        <ActionForm action=approve>
                            <input type="hidden" name="request" value=id />
                            <button type="submit" class="button primary" data-testid="approve">"Approve"</button>
                        </ActionForm>
                        <ActionForm action=reject attr:class="reject">
                            <input type="hidden" name="request" value=id />
                            <label for=format!("reason-{id}")>"Reason to reject"</label>
                            <input id=format!("reason-{id}") name="reason" type="text" required placeholder="why this must not deploy" />
                            <button type="submit" class="button danger">"Reject"</button>
                        </ActionForm>
                    </div>
                }),
            }}
        </section>
    }
}

/// `key=value&…` with values percent-encoded; empty values left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let value: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A GET form that keeps the router in charge once the WASM runs (and is a plain form before).
#[component]
pub fn GetForm(action: &'static str, class: &'static str, children: Children) -> impl IntoView {
    view! {
        <Form method="get" action=action attr:class=class attr:role="search">
            {children()}
        </Form>
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn a_date_starts_the_timeline_at_the_end_of_that_day() {
        assert_eq!(
            cursor_at_end_of("2026-11-30").as_deref(),
            Some("1796083200000:9223372036854775807|1796083200000:~")
        );
        assert_eq!(utc(1_796_083_200_000 - 1), "2026-11-30 23:59:59");
        assert_eq!(cursor_at_end_of("2026-02-30"), None);
        assert_eq!(cursor_at_end_of("yesterday"), None);
        assert_eq!(cursor_at_end_of(""), None);
    }
}
