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

/// Formats a timestamp as RFC 3339 UTC with second precision (`2026-11-26T12:00:00Z`), the
/// form Kubernetes uses for `metav1.Time`.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A span for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn duration_text(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(45_000), "45s");
        assert_eq!(duration_text(12 * 60_000 + 5_000), "12m");
        assert_eq!(duration_text(3 * 3_600_000 + 5 * 60_000), "3h 5m");
        assert_eq!(duration_text(50 * 3_600_000), "2d 2h");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_694_399_999), "2026-11-26T11:59:59Z");
    }
}
