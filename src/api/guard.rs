//! The perimeter (DESIGN §14): what every request must pass before any handler, decided in this
//! one place. Who may call is decided from the **route** the request will reach — its pattern,
//! found in the router's own resource map with the same percent-decoded path the router matches
//! — never from the raw path or query text. Every route needs the API token unless
//! `NO_API_TOKEN` lists it (or `EXECUTOR_API`, ODM's executor protocol, whose tokens may be its
//! own): a route added later, and a path that matches no route, need it too.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN, TRANSFER_ENCODING,
};
use actix_web::http::Method;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::body::is_json;
use super::error::ApiError;
use super::origin::origin_of;
use super::request::Query;
use crate::secret::Secret;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, and the dashboard's page and script (its data comes from the API).
    Public,
    /// `/metrics`: anyone, or only the holder of `metrics.token` when it is set.
    Metrics,
    /// A pipeline's callback: its own token, checked by the handler against the task, proves it
    /// may report that task's outcome (`action=STOP`) and nothing more.
    Callback,
    /// The API token (`auth.api_tokens`); without tokens, anyone (anonymous on purpose: the
    /// service refuses to start so beyond loopback unless `auth.anonymous` says so).
    ApiToken,
    /// ODM's executor protocol: `executor_api.tokens` when set, else the API token as for
    /// `ApiToken`; nobody's with `executor_api.anonymous` (ODM's client sends no token).
    ExecutorApi,
    /// An Azure DevOps service hook: HTTP Basic with the executor's `service_hook_secret`,
    /// checked by the handler (`hooks.rs`), which knows the executor; no secret, no route.
    ServiceHook,
}

/// The routes that need no API token, by method and pattern (as registered in `routes`). To add
/// a route with a credential of its own, list it here with an `Access` saying which, and check
/// that credential in `Perimeter::authenticate` — or in the handler when only it knows what to
/// check against (`ServiceHook`: the secret of the executor the path names).
pub const NO_API_TOKEN: &[(&str, &str, Access)] = &[
    ("GET", "/health/live", Access::Public),
    ("GET", "/health/ready", Access::Public),
    ("GET", "/ui", Access::Public),
    ("GET", "/ui/", Access::Public),
    ("GET", "/ui/app.js", Access::Public),
    ("GET", "/ui/common.js", Access::Public),
    ("GET", "/ui/board.js", Access::Public),
    ("GET", "/ui/tasks.js", Access::Public),
    ("GET", "/ui/dryrun.js", Access::Public),
    ("GET", "/metrics", Access::Metrics),
    (
        "PATCH",
        "/api/v1/pp/devops/tasks/{id}/status",
        Access::Callback,
    ),
    (
        "POST",
        "/api/v1/pp/devops/tasks/{id}/status",
        Access::Callback,
    ),
    (
        "POST",
        "/api/v1/pp/devops/hooks/{executor}",
        Access::ServiceHook,
    ),
];

/// ODM's executor protocol (`Access::ExecutorApi`), by method and pattern: the API token unless
/// `executor_api.tokens` or `executor_api.anonymous` say otherwise.
pub const EXECUTOR_API: &[(&str, &str)] = &[
    ("POST", "/api/v1/up/executor/tasks"),
    ("GET", "/api/v1/up/executor/tasks/{id}/status"),
];

/// What a request to `route` (a pattern; `None`: no route) with this method and query needs.
pub fn access(method: &Method, route: Option<&str>, query: &Query) -> Access {
    let listed = route.and_then(|route| {
        NO_API_TOKEN
            .iter()
            .find(|(m, pattern, _)| *m == method.as_str() && *pattern == route)
    });
    let executor_api = route.is_some_and(|route| {
        EXECUTOR_API
            .iter()
            .any(|(m, pattern)| *m == method.as_str() && *pattern == route)
    });
    match listed.map(|(_, _, access)| *access) {
        // Read exactly as the handler reads it (a duplicate `action` was refused before).
        Some(Access::Callback) if query.action().as_deref() != Some("STOP") => Access::ApiToken,
        Some(access) => access,
        None if executor_api => Access::ExecutorApi,
        None => Access::ApiToken,
    }
}

/// The route pattern the router will match for this request: the same resource map, the same
/// decoded path (`match_info`, percent-decoded except `%2F`, `%25` and `%2B`). `HttpRequest::
/// match_pattern` is no substitute before routing: it falls back to the raw path.
pub fn route_of(req: &ServiceRequest) -> Option<String> {
    let req = req.request();
    req.resource_map().match_pattern(req.match_info().as_str())
}

/// POST, PUT, PATCH, DELETE and anything unknown: all but the methods that only read.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The credentials and origins requests are checked against.
pub struct Perimeter {
    pub api_tokens: Vec<Secret>,
    pub metrics_token: Option<Secret>,
    /// `origin::own_origins`.
    pub own_origins: Vec<String>,
    /// `executor_api.tokens`: empty = the API tokens guard the executor API.
    pub executor_tokens: Vec<Secret>,
    /// `executor_api.anonymous`: the executor API takes no token at all.
    pub executor_anonymous: bool,
    /// The executors with a service hook secret: `/hooks/{executor}` of any other is no route,
    /// guarded as one (its handler answers 404 to a caller with an API token).
    pub hook_executors: Vec<String>,
}

impl Perimeter {
    /// Every check, in order: the query (a duplicate parameter changes what `access` reads),
    /// the credential, then for changes where they come from and what they carry, then Accept.
    pub fn check(&self, req: &HttpRequest, route: Option<&str>) -> Result<(), ApiError> {
        let query = Query::of(req)?;
        let access = match access(req.method(), route, &query) {
            // The route's one parameter, its last segment, decoded as the handler reads it.
            Access::ServiceHook => {
                let executor = req.match_info().as_str().rsplit('/').next();
                let hooked = executor.is_some_and(|e| self.hook_executors.iter().any(|h| h == e));
                if hooked {
                    Access::ServiceHook
                } else {
                    Access::ApiToken
                }
            }
            access => access,
        };
        self.authenticate(req, access)?;
        if changes_state(req.method()) {
            self.refuse_other_sites(req)?;
            // Pipelines' `curl -d` often says nothing or text/plain; the callback reads JSON.
            if access != Access::Callback {
                json_body(req)?;
            }
        }
        if let Some(route) = route.filter(|r| r.starts_with("/api/")) {
            check_accept(req, TEXT_ROUTES.contains(&route))?;
        }
        Ok(())
    }

    fn authenticate(&self, req: &HttpRequest, access: Access) -> Result<(), ApiError> {
        match access {
            Access::Public | Access::Callback | Access::ServiceHook => Ok(()),
            Access::Metrics => match &self.metrics_token {
                None => Ok(()),
                Some(token) => bearer(req, std::slice::from_ref(token), "the metrics token"),
            },
            Access::ApiToken if self.api_tokens.is_empty() => Ok(()),
            Access::ApiToken => bearer(req, &self.api_tokens, "an API token"),
            Access::ExecutorApi if self.executor_anonymous => Ok(()),
            Access::ExecutorApi if !self.executor_tokens.is_empty() => bearer(
                req,
                &self.executor_tokens,
                "an executor API token (executor_api.tokens)",
            ),
            Access::ExecutorApi => self.authenticate(req, Access::ApiToken),
        }
    }

    /// A browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); other clients
    /// (pipelines, scripts) send neither and pass.
    fn refuse_other_sites(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if header("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) {
            return Err(cross_site(
                "a browser sent it from another site (Sec-Fetch-Site: cross-site)".into(),
            ));
        }
        if let Some(origin) = req.headers().get(ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let own = origin_of(origin).is_some_and(|o| self.own_origins.contains(&o));
            if !own {
                return Err(cross_site(format!(
                    "a browser sent it from {origin:?}, which is not this service's origin \
                     (server.public_url, or the address it listens on)"
                )));
            }
        }
        Ok(())
    }
}

fn cross_site(why: String) -> ApiError {
    ApiError::new(
        403,
        "40301",
        "Forbidden",
        format!("refused: {why}; a web page cannot change anything here, only the service's own dashboard and clients outside a browser can"),
    )
}

fn bearer(req: &HttpRequest, accepted: &[Secret], what: &str) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(format!("{what} is required: Authorization: Bearer <token>"))
        })?;
    // Compare every byte of every token so the time taken says nothing about the right one.
    let matched = accepted.iter().fold(false, |found, t| {
        constant_time_eq(t.expose().as_bytes(), given.as_bytes()) | found
    });
    if matched {
        Ok(())
    } else {
        Err(ApiError::unauthorized(format!("{what} is not valid")))
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A body must say it is JSON: a browser's form or `no-cors` fetch cannot, so it cannot send one.
fn json_body(req: &HttpRequest) -> Result<(), ApiError> {
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = length.is_some_and(|n| n > 0) || req.headers().contains_key(TRANSFER_ENCODING);
    if !has_body || is_json(req.content_type()) {
        return Ok(());
    }
    let found = match req.headers().get(CONTENT_TYPE) {
        None => "none".to_owned(),
        Some(v) => format!("{:?}", v.to_str().unwrap_or("?")),
    };
    Err(ApiError::new(
        415,
        "41501",
        "Unsupported media type",
        format!("a request with a body must send it as JSON (Content-Type: application/json), found Content-Type {found}"),
    ))
}

const ACCEPTABLE: [&str; 6] = [
    "application/json",
    "application/vnd.odmp.v1+json",
    "application/vnd.odmp+json",
    "application/*",
    "*/*",
    "*",
];

/// Routes that answer text (`text/plain`) rather than JSON: a client may ask for that.
const TEXT_ROUTES: &[&str] = &["/api/v1/pp/devops/tasks/{id}/logs"];

fn check_accept(req: &HttpRequest, text_route: bool) -> Result<(), ApiError> {
    let Some(accept) = req.headers().get(ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|range| {
        let essence = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence.is_empty()
            || ACCEPTABLE.contains(&essence.as_str())
            || (text_route && matches!(essence.as_str(), "text/plain" | "text/*"))
    });
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::new(
            406,
            "40601",
            "Not acceptable",
            format!("cannot answer with {accept}: this API answers application/json"),
        ))
    }
}

/// Marks a request no route took, so the perimeter does not compare its decision with a
/// route that never ran.
pub struct Unrouted;

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    req.extensions_mut().insert(Unrouted);
    Err(ApiError::new(
        404,
        "40400",
        "Not found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
