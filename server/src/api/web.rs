//! The dashboard (web/): its files compiled into the binary, so it works offline and ships with
//! the service.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");
const CHART_JS: &str = include_str!("../../../web/chart.js");
const SEARCH_JS: &str = include_str!("../../../web/search.js");
const PLAN_JS: &str = include_str!("../../../web/plan.js");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    file("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    file("text/css; charset=utf-8", APP_CSS)
}

pub async fn chart_js() -> Response {
    file("text/javascript; charset=utf-8", CHART_JS)
}

pub async fn search_js() -> Response {
    file("text/javascript; charset=utf-8", SEARCH_JS)
}

pub async fn plan_js() -> Response {
    file("text/javascript; charset=utf-8", PLAN_JS)
}
