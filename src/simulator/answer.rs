//! Answers in the shapes Azure DevOps and Entra use, with faults applied on the way out.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::config::{FaultKind, FaultSpec};
use super::state::{RequestRecord, SimState};

pub(crate) enum Answer {
    Json(StatusCode, Value),
    /// What Azure DevOps shows a caller it does not recognise (and that did not ask for a 401).
    SignIn,
    /// 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// Plain text (a log's content).
    Text(StatusCode, String),
}

/// The error shape of Azure DevOps: `{"$id", "innerException", "message", "typeName",
/// "typeKey", "errorCode", "eventId"}`.
pub(crate) fn azure_error(
    status: StatusCode,
    message: impl Into<String>,
    type_key: &str,
) -> Answer {
    let namespace = match type_key {
        "PipelineValidationException" | "PipelineNotFoundException" | "RunNotFoundException" => {
            "Microsoft.Azure.Pipelines.WebApi"
        }
        "BuildNotFoundException" => "Microsoft.TeamFoundation.Build.WebApi",
        "ArgumentException" => "System",
        _ => "Microsoft.VisualStudio.Services.WebApi",
    };
    let assembly = if namespace == "System" {
        "mscorlib"
    } else {
        namespace
    };
    Answer::Json(
        status,
        json!({
            "$id": "1",
            "innerException": null,
            "message": message.into(),
            "typeName": format!("{namespace}.{type_key}, {assembly}"),
            "typeKey": type_key,
            "errorCode": 0,
            "eventId": 3000,
        }),
    )
}

pub(crate) fn bad_request(message: impl Into<String>) -> Answer {
    azure_error(StatusCode::BAD_REQUEST, message, "ArgumentException")
}

/// Consumes the fault matching this request, if any, with the answer when the fault refuses
/// the request; the others (`slow`, `bom`, `badGatewayAfterProcessing`) are applied by `respond`.
pub(crate) fn take_fault(
    state: &SimState,
    req: &HttpRequest,
) -> (Option<FaultSpec>, Option<Answer>) {
    let path = percent_decode(req.path());
    let fault = state.lock().take_fault(req.method().as_str(), &path);
    let Some(fault) = fault else {
        return (None, None);
    };
    let refusal = match fault.kind {
        FaultKind::RateLimit => Answer::RateLimited(fault.retry_after_secs.unwrap_or(1)),
        FaultKind::Unavailable => Answer::Json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"message": "Service Unavailable (injected by the simulator)"}),
        ),
        FaultKind::ServerError => azure_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "TF400898: An Internal Error Occurred (injected by the simulator).",
            "VssServiceException",
        ),
        FaultKind::SignInPage => Answer::SignIn,
        FaultKind::Slow | FaultKind::Bom | FaultKind::BadGatewayAfterProcessing => {
            return (Some(fault), None)
        }
    };
    (Some(fault), Some(refusal))
}

/// Turns an answer into a response, applying the fault still pending, and logs the exchange.
pub(crate) async fn respond(
    state: &SimState,
    req: &HttpRequest,
    fault: Option<&FaultSpec>,
    answer: Answer,
) -> HttpResponse {
    let kind = fault.map(|f| f.kind);
    if kind == Some(FaultKind::Slow) {
        let delay = fault.and_then(|f| f.delay_ms).unwrap_or(5_000);
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let response = match (kind, answer) {
        (Some(FaultKind::BadGatewayAfterProcessing), _) => HttpResponse::BadGateway()
            .content_type("text/html")
            .body("<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (_, Answer::SignIn) => HttpResponse::NonAuthoritativeInformation()
            .content_type("text/html; charset=utf-8")
            .body(
                "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head>\
                 <body>Sign in to your account</body></html>",
            ),
        (_, Answer::RateLimited(secs)) => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", secs.to_string()))
            .insert_header(("X-RateLimit-Resource", "ATCPU"))
            .insert_header(("X-RateLimit-Limit", "200"))
            .insert_header(("X-RateLimit-Remaining", "0"))
            .json(
                json!({"message": "Request was blocked due to exceeding usage of resource \
                                     'ATCPU' (injected by the simulator)."}),
            ),
        (_, Answer::Text(status, text)) => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(text),
        (kind, Answer::Json(status, body)) => {
            let mut bytes = Vec::new();
            if kind == Some(FaultKind::Bom) {
                bytes.extend_from_slice(b"\xEF\xBB\xBF");
            }
            bytes.extend_from_slice(body.to_string().as_bytes());
            HttpResponse::build(status)
                .content_type("application/json; charset=utf-8")
                .body(bytes)
        }
    };
    state.lock().log_request(RequestRecord {
        method: req.method().to_string(),
        path: percent_decode(req.path()),
        query: req.query_string().to_owned(),
        status: response.status().as_u16(),
        fault: fault.map(|f| format!("{:?}", f.kind)),
    });
    response
}

/// `%20` → space etc.; invalid escapes are kept as written.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
