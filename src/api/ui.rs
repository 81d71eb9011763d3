//! `/ui`: the dashboard (a promotion board, the activities, their tasks with live run state and
//! logs, a dry-run form), read from the REST API by the browser. Built into the binary; no build
//! step, no third-party script: a few plain scripts, each served at its own public route.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::HttpResponse;

const PAGE: &str = include_str!("ui/index.html");

/// The page's scripts by route, in the order the page loads them (`common.js` first: the
/// others use its helpers; `app.js` last: it starts the refresh). Each route is listed in
/// `guard::NO_API_TOKEN`: the scripts hold no data.
pub const SCRIPTS: [(&str, &str); 5] = [
    ("/ui/common.js", include_str!("ui/common.js")),
    ("/ui/board.js", include_str!("ui/board.js")),
    ("/ui/tasks.js", include_str!("ui/tasks.js")),
    ("/ui/dryrun.js", include_str!("ui/dryrun.js")),
    ("/ui/app.js", include_str!("ui/app.js")),
];

/// Only this origin's script and the page's own styles: data shown by the page can never run.
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                      style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Content-Security-Policy", POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(PAGE)
}

pub fn script(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}
