//! The audit ledger over HTTP: `GET /api/v1/audit` (filters, keyset pages, JSON / JSON Lines /
//! CSV) and `GET /api/v1/audit/verify` (the chain check `tidemark audit verify` runs).

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{internal_error, AppState};
use crate::auth::visibility::Visibility;
use crate::clock::{self, Millis};
use crate::store::{AuditFilter, AuditRow, AuditVerification, Store, StoreError};
use app::model::AppError;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    format: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
    actor: Option<String>,
    action: Option<String>,
    application: Option<String>,
    /// RFC 3339 or milliseconds since the epoch, inclusive.
    since: Option<String>,
    /// RFC 3339 or milliseconds since the epoch, exclusive.
    until: Option<String>,
}

fn instant(name: &str, value: Option<&str>) -> Result<Option<Millis>, AppError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            AppError::BadRequest(format!(
                "`{name}` must be RFC 3339 (2026-11-26T12:00:00Z) or milliseconds since the epoch"
            ))
        })
}

/// One CSV field, always quoted. A value a spreadsheet would read as a formula (it starts
/// with `=`, `+`, `-`, `@`, a tab or a carriage return: a claimed user name, a target) is
/// prefixed with `'` so it stays text (OWASP, CSV injection).
fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    format!(
        "\"{}{}\"",
        if formula { "'" } else { "" },
        s.replace('"', "\"\"")
    )
}

const CSV_HEADER: &str = "seq,at,actor_id,actor_name,auth_method,action,target,outcome,source_ip,details,prev_hash,hash\n";

fn csv_row(r: &AuditRow) -> String {
    let e = &r.event;
    let fields = [
        r.seq.to_string(),
        clock::rfc3339(e.at),
        e.actor_id.clone(),
        e.actor_name.clone(),
        e.auth_method.clone(),
        e.action.clone(),
        e.target.clone(),
        e.outcome.clone(),
        e.source_ip.clone(),
        e.details.to_string(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// `GET /api/v1/audit?format=json|jsonl|csv&actor=&action=&application=&since=&until=&cursor=&limit=`:
/// newest first; the next page's cursor is in `next` (JSON) or the `X-Next-Cursor` header.
///
/// A project-scoped caller gets only the rows about applications of its projects.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("format" = Option<String>, Query, description = "json (default), jsonl or csv"),
        ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query),
        ("actor" = Option<String>, Query), ("action" = Option<String>, Query), ("application" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339 or ms since the epoch, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339 or ms since the epoch, exclusive")),
    responses((status = 200, description = "Ledger rows, newest first (JSON lines or CSV with `format`; next cursor in `X-Next-Cursor`)",
        content((crate::http::openapi::AuditPage = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))), crate::http::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(visibility): Extension<Visibility>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let result = async {
        let filter = AuditFilter {
            actor: q.actor.clone().filter(|s| !s.is_empty()),
            action: q.action.clone().filter(|s| !s.is_empty()),
            application: q.application.clone().filter(|s| !s.is_empty()),
            since: instant("since", q.since.as_deref())?,
            until: instant("until", q.until.as_deref())?,
            projects: visibility.projects().map(<[String]>::to_vec),
        };
        if let Some(c) = &q.cursor {
            if c.parse::<i64>().is_err() {
                return Err(AppError::BadRequest(format!(
                    "`cursor` {c:?} is not a cursor from a previous page"
                )));
            }
        }
        let (rows, next) = state
            .store
            .audit_page(&filter, q.cursor.as_deref(), q.limit.unwrap_or(100))
            .await
            .map_err(|e| internal_error(&e))?;
        Ok((rows, next))
    }
    .await;
    let (rows, next) = match result {
        Ok(page) => page,
        Err(e) => return e.into_response(),
    };
    let (content_type, body) = match q.format.as_deref().unwrap_or("json") {
        "json" => return Json(super::openapi::AuditPage { items: rows, next }).into_response(),
        "jsonl" => (
            "application/x-ndjson",
            rows.iter()
                .map(|r| format!("{}\n", serde_json::to_string(r).unwrap_or_default()))
                .collect::<String>(),
        ),
        "csv" => (
            "text/csv; charset=utf-8",
            std::iter::once(CSV_HEADER.to_owned())
                .chain(rows.iter().map(csv_row))
                .collect::<String>(),
        ),
        other => {
            return AppError::BadRequest(format!(
                "unknown format `{other}` (expected json, jsonl or csv)"
            ))
            .into_response()
        }
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("x-next-cursor", next);
    }
    response
}

/// How long a verification of the ledger is reused.
const VERIFY_REUSE: std::time::Duration = std::time::Duration::from_secs(30);

/// The last verification of the whole ledger and when it ran. Walking the chain costs time
/// proportional to its length, so the REST check and the Audit page share one, reused for
/// 30 seconds; concurrent callers wait for the one walk under way.
#[derive(Default)]
pub struct VerificationCache(tokio::sync::Mutex<Option<(std::time::Instant, AuditVerification)>>);

impl VerificationCache {
    /// A verification at most 30 seconds old, walking the chain when there is none.
    pub async fn get(&self, store: &Store) -> Result<AuditVerification, StoreError> {
        let mut cached = self.0.lock().await;
        match cached.as_ref() {
            Some((at, v)) if at.elapsed() < VERIFY_REUSE => Ok(v.clone()),
            _ => {
                let v = store.audit_verify().await?;
                *cached = Some((std::time::Instant::now(), v.clone()));
                Ok(v)
            }
        }
    }
}

/// `GET /api/v1/audit/verify`: `{"ok", "verified_through", "first_bad", "problem"}`. Only for
/// callers who see every project: the check covers (and counts) every project's rows.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The hash chain checked", body = crate::store::AuditVerification), crate::http::openapi::Errors))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(visibility): Extension<Visibility>,
) -> Response {
    if !visibility.is_all() {
        return AppError::Forbidden(
            "Verifying the audit ledger needs a role in every project: the check covers all \
             projects' rows"
                .into(),
        )
        .into_response();
    }
    match state.audit_verified.get(&state.store).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal_error(&e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    /// `undelivered`: only pending and failed deliveries.
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/notifications/deliveries`: the latest notification deliveries (admins), newest
/// first, as JSON.
pub async fn deliveries(
    State(state): State<AppState>,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let undelivered = match q.status.as_deref() {
        None | Some("") | Some("all") => false,
        Some("undelivered") => true,
        Some(other) => {
            return AppError::BadRequest(format!(
                "status must be `all` or `undelivered`, not `{other}`"
            ))
            .into_response()
        }
    };
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
    match state.store.recent_deliveries(limit, undelivered).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal_error(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_as_formulas_stay_text() {
        for (value, field) in [
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"",
            ),
            ("+1+cmd|' /C calc'!A0", "\"'+1+cmd|' /C calc'!A0\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
        ] {
            assert_eq!(csv_field(value), field, "{value}");
        }
        assert_eq!(csv_field("local:ada"), "\"local:ada\"");
        assert_eq!(csv_field("a=b"), "\"a=b\"");
        assert_eq!(csv_field("12"), "\"12\"");
    }
}
