//! `GET /`: the live stats page. Its HTML, script and style are compiled into the binary
//! (`include_str!`), so the page loads nothing from anywhere but this listener. The script
//! polls `/api/topology` (state) and `/api/history` (15 minutes of rates and percentiles
//! kept by the server, see [`super::history`]) once a second and draws the charts as SVG.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The page.
pub async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'",
        ),
    );
    r
}

/// Its script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_outside() {
        // The SVG namespace is a name, not an address anything is loaded from.
        let script = SCRIPT.replace("\"http://www.w3.org/2000/svg\"", "");
        for text in [INDEX, script.as_str(), STYLE] {
            for bad in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(bad), "asset refers to {bad}");
            }
        }
        assert!(INDEX.contains("/assets/app.js") && INDEX.contains("/assets/style.css"));
        assert!(INDEX.contains("name=\"viewport\""));
        assert!(SCRIPT.contains("/api/topology") && SCRIPT.contains("/api/history"));
        assert!(SCRIPT.contains("data-node") || SCRIPT.contains("dataset.node"));
    }
}
