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

/// The application a tracking annotation `value` names, only when the rest of the value is
/// this object's own identity (`api_version` as written, e.g. `apps/v1`): a copy of another
/// object's annotation, or one written by hand for another object, names no application.
pub fn application_of_object<'a>(
    value: &'a str,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a str> {
    let app = application_of(value)?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (value[app.len() + 1..] == format!("{group}/{kind}:{namespace}/{name}")).then_some(app)
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

    #[test]
    fn an_annotation_counts_only_on_the_object_it_names() {
        let v = "shop:apps/Deployment:shop/web";
        assert_eq!(
            application_of_object(v, "apps/v1", "Deployment", "shop", "web"),
            Some("shop")
        );
        assert_eq!(
            application_of_object(v, "apps/v1", "Deployment", "shop", "api"),
            None
        );
        assert_eq!(application_of_object(v, "v1", "Pod", "shop", "web"), None);
        assert_eq!(
            application_of_object("ops:/ConfigMap:ops/x", "v1", "ConfigMap", "ops", "x"),
            Some("ops")
        );
    }
}
