//! Server functions: thin calls from the UI to the engine through the port traits.
//!
//! Under `ssr` this module also defines those traits; the `server` crate implements them and
//! provides a [`ports::Ports`] value in the Leptos context of every request.

#[cfg(feature = "ssr")]
pub mod ports;

use leptos::prelude::*;

use crate::model::{AppError, AppSummary};

/// All applications Tidemark manages, sorted by name.
#[server(prefix = "/_fn", endpoint = "list_applications")]
pub async fn list_applications() -> Result<Vec<AppSummary>, AppError> {
    ports::Ports::from_context()?
        .catalog
        .list_applications()
        .await
}
