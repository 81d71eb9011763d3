//! Request bodies, read by hand so every failure gets ODM's code (415, 413, 400).

use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::ApiError;

/// JSON media types ODM clients send.
pub fn is_json(mime: &str) -> bool {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/vnd.odmp") && essence.ends_with("+json"))
}

/// The raw body, refused past `limit` bytes.
pub async fn read_bytes(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                413,
                "41301",
                "Payload too large",
                format!("the request body is larger than {limit} bytes (server.body_limit_bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How strict `read_json` is.
#[derive(Clone, Copy)]
pub struct BodyRules {
    /// An empty body is `None` instead of an error.
    pub optional: bool,
    /// Read JSON whatever the Content-Type says (pipelines calling back with a bare `curl -d`).
    pub any_content_type: bool,
}

impl BodyRules {
    /// A JSON body must be there, said to be JSON.
    pub const REQUIRED: BodyRules = BodyRules {
        optional: false,
        any_content_type: false,
    };
}

/// A JSON body; `None` when the body is empty and optional.
pub async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    rules: BodyRules,
) -> Result<Option<Value>, ApiError> {
    Ok(read_json_text(req, payload, limit, rules)
        .await?
        .map(|(json, _)| json))
}

/// A JSON body with its text as sent (without a byte order mark): a `Value` forgets the order
/// of an object's keys, and a descriptor's stage map is ordered by them.
pub async fn read_json_text(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    rules: BodyRules,
) -> Result<Option<(Value, String)>, ApiError> {
    let content_type = req.content_type();
    let body = read_bytes(payload, limit).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return if rules.optional {
            Ok(None)
        } else {
            Err(ApiError::bad_request(
                "the request body is empty: a JSON object is expected",
            ))
        };
    }
    if !rules.any_content_type && !is_json(content_type) {
        return Err(ApiError::new(
            415,
            "41501",
            "Unsupported media type",
            format!("Content-Type {content_type:?} is not supported: send application/json"),
        ));
    }
    // RFC 8259 lets a parser ignore a byte order mark; Windows tools (PowerShell 5's UTF8
    // encoding) write one, and a refused callback would leave its task waiting until its timeout.
    let json = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
    let value = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    // Valid JSON is UTF-8 throughout (serde_json checks the strings; the rest is ASCII).
    Ok(Some((value, String::from_utf8_lossy(json).into_owned())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn odm_media_types_are_json() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.odmp.v1+json",
            "application/vnd.odmp+json",
        ] {
            assert!(super::is_json(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "application/xml",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!super::is_json(no), "{no}");
        }
    }
}
