//! Which application a live object belongs to: the tracking annotation Tidemark writes on every
//! object it applies.

/// The annotation naming the application (and object) that applied a live object; its value is
/// `<application>:<group>/<kind>:<namespace>/<name>` (see `reconcile::tracking_id`).
pub const TRACKING_ANNOTATION: &str = "tidemark.dev/tracking-id";

/// The application named by a tracking annotation's value (`None` when malformed).
pub fn application_of(value: &str) -> Option<&str> {
    value
        .split_once(':')
        .map(|(app, _)| app)
        .filter(|app| !app.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_is_the_part_before_the_first_colon() {
        assert_eq!(
            application_of("shop:apps/Deployment:shop/web"),
            Some("shop")
        );
        assert_eq!(application_of(":apps/Deployment:shop/web"), None);
        assert_eq!(application_of("no-colon"), None);
    }
}
