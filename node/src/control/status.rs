//! The status page (`GET /` and `/index.html`): one self-contained HTML document that reads
//! the endpoint's own JSON (`/v1/peers`, `/v1/explain/{name}`, `/v1/events` when served) every
//! 2 s and draws the reachability matrix, the sites, each name's answer and a timeline.
//!
//! Invariants: the page loads nothing from elsewhere (inline CSS and JS, works offline), and its
//! Content-Security-Policy allows only that inline script and style, by hash, and requests to
//! this endpoint: an injected element can neither run nor load anything. The script builds the
//! DOM with `createElement` and text nodes only, since site and peer names are data.

use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The page, as served.
pub const PAGE: &str = include_str!("status.html");

/// The page's Content-Security-Policy: its one inline script and one inline style by hash.
static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        source_hash(inline(PAGE, "script")),
        source_hash(inline(PAGE, "style")),
    )
});

/// The text of the first `<tag>` element of `page` (what CSP hashes).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).map(|i| i + open.len()).unwrap_or(page.len());
    let end = page[start..].find(&close).map_or(page.len(), |i| start + i);
    &page[start..end]
}

/// A CSP source expression allowing exactly `text` as an inline script or style.
fn source_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// `GET /`, `GET /index.html`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /favicon.ico`: no icon (and no 404 in the browser's console).
pub async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page is one document with one script and one style, both inline, and nothing it
    /// refers to lives elsewhere.
    #[test]
    fn the_page_is_self_contained() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style");
        for external in ["src=", "<link", "@import", "url(", "http://", "https://", "//cdn"] {
            assert!(!PAGE.contains(external), "the page refers to something outside it: {external}");
        }
        assert!(!inline(PAGE, "script").is_empty() && !inline(PAGE, "style").is_empty());
    }

    /// Names come from configs and peers: the script never parses data as markup.
    #[test]
    fn the_script_builds_the_dom_without_parsing_markup() {
        let script = inline(PAGE, "script");
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("] {
            assert!(!script.contains(sink), "the script uses {sink}");
        }
        assert!(script.contains("document.createTextNode"));
    }

    /// The policy pins the script and the style by hash (a changed page changes the hash) and
    /// allows no other source.
    #[test]
    fn the_policy_allows_only_the_inline_script_and_style() {
        let csp = CONTENT_SECURITY_POLICY.as_str();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains(&format!("script-src '{}'", source_hash(inline(PAGE, "script")))), "{csp}");
        assert_ne!(source_hash("a"), source_hash("b"));
        // `alert(1)`'s hash as computed independently (`openssl dgst -sha256 -binary | base64`).
        assert_eq!(source_hash("alert(1)"), "sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=");
    }
}
