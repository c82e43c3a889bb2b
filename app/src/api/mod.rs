//! Server functions: thin calls from the UI to the engine through the port traits.
//!
//! Under `ssr` this module also defines those traits; the `server` crate implements them and
//! provides a [`ports::Ports`] value in the Leptos context of every request.

#[cfg(feature = "ssr")]
pub mod ports;

use leptos::prelude::*;

use crate::model::{AppError, AppSummary, AuditQuery, AuditView, SignInOptions, Viewer};

/// All applications Tidemark manages, sorted by name.
#[server(prefix = "/_fn", endpoint = "list_applications")]
pub async fn list_applications() -> Result<Vec<AppSummary>, AppError> {
    ports::Ports::from_context()?
        .catalog
        .list_applications()
        .await
}

/// The signed-in person (`None` when anonymous): the user menu.
#[server(prefix = "/_fn", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<Viewer>, AppError> {
    Ok(ports::Ports::from_context()?.identity.current())
}

/// What the sign-in page offers (single sign-on button, local form).
#[server(prefix = "/_fn", endpoint = "login_options")]
pub async fn login_options() -> Result<SignInOptions, AppError> {
    Ok(ports::Ports::from_context()?.identity.sign_in_options())
}

/// One page of the audit ledger and the chain's state (the Audit page).
#[server(prefix = "/_fn", endpoint = "audit_page")]
pub async fn audit_page(query: AuditQuery) -> Result<AuditView, AppError> {
    ports::Ports::from_context()?.ledger.audit(query).await
}
