//! The one place that reads the wall clock; everything else takes time as a parameter.

/// Milliseconds since the Unix epoch, the timestamp unit stored in the database.
pub type Millis = i64;

/// The current wall-clock time.
#[allow(clippy::disallowed_methods)] // the single sanctioned call site
pub fn now() -> Millis {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
