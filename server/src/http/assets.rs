//! What the browser downloads: the compiled site's static files under `/pkg` (hashed names,
//! precompressed brotli and gzip chosen by `Accept-Encoding`, cached for a year as immutable),
//! HTML pages revalidated on every load (`no-cache`), and dynamic answers compressed on the fly.

use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// `Cache-Control` of a file whose name carries its content hash.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The hash file of a release build (`js: …`, `wasm: …`, `css: …`), as an absolute path: next
/// to the running binary (where cargo-leptos writes it), else in the site root (where an image
/// or a package puts it). `None`: a build without hashed names.
pub fn hash_file(site_root: &Path) -> Option<PathBuf> {
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hash.txt")));
    let in_site = site_root.join("hash.txt");
    [beside_binary, Some(in_site)]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .map(|p| std::path::absolute(&p).unwrap_or(p))
}

/// `/pkg/*` from `site_root/pkg`: the precompressed `.br` / `.gz` sibling when the browser
/// accepts it (else the plain file), `Cache-Control` immutable when names are hashed
/// (`hashed`), `no-cache` otherwise (a debug build reuses the names).
pub fn pkg<S: Clone + Send + Sync + 'static>(site_root: &Path, hashed: bool) -> Router<S> {
    let files = ServeDir::new(site_root.join("pkg"))
        .precompressed_br()
        .precompressed_gzip();
    let cache = HeaderValue::from_static(if hashed { IMMUTABLE } else { "no-cache" });
    Router::new()
        .fallback_service(files)
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            cache,
        ))
}

/// HTML pages without their own `Cache-Control` get `no-cache` (always revalidated: a new
/// release's page names the new hashed files at once).
pub async fn html_no_cache(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html && !response.headers().contains_key(header::CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}
