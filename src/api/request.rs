//! Reading the parts of a request: ids in the path, query parameters, secret headers.

use std::collections::HashMap;

use actix_web::HttpRequest;

use super::error::ApiError;
use crate::keys::ActivitySecrets;
use crate::secret::Secret;

pub struct Query(HashMap<String, String>);

impl Query {
    pub fn of(req: &HttpRequest) -> Result<Query, ApiError> {
        let query =
            actix_web::web::Query::<HashMap<String, String>>::from_query(req.query_string())
                .map_err(|e| ApiError::bad_request(format!("the query string is malformed: {e}")))?
                .into_inner();
        for (name, value) in &query {
            no_nul(value, &format!("query parameter {name:?}"))?;
            no_nul(name, "a query parameter name")?;
        }
        Ok(Query(query))
    }

    /// A parameter, `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name} must be true or false, found {other:?}"
            ))),
        }
    }

    pub fn number(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be a number, found {v:?}"))
                })
            })
            .transpose()
    }

    /// A status filter, checked against the accepted names.
    pub fn status<T>(
        &self,
        parse: fn(&str) -> Option<T>,
        names: fn() -> String,
    ) -> Result<Option<T>, ApiError> {
        self.get("status")
            .map(|v| {
                parse(&v.to_ascii_uppercase()).ok_or_else(|| {
                    ApiError::bad_request(format!("status must be one of {}, found {v:?}", names()))
                })
            })
            .transpose()
    }
}

/// A numeric id from the path.
pub fn path_id(req: &HttpRequest, what: &str) -> Result<i64, ApiError> {
    let raw = req.match_info().get("id").unwrap_or_default();
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!("the {what} id must be a number, found {raw:?}"))
    })
}

/// A text segment of the path (a product id, a version).
pub fn path_text(req: &HttpRequest, name: &str) -> Result<String, ApiError> {
    let text = req.match_info().get(name).unwrap_or_default();
    no_nul(text, &format!("the {name} in the path"))?;
    Ok(text.to_owned())
}

/// PostgreSQL cannot store a NUL character in text, and no id or name needs one: refused the
/// same way on both backends instead of failing in the database.
fn no_nul(text: &str, what: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{what} contains a NUL character (\\u0000)"
        )));
    }
    Ok(())
}

/// `x-odm-<executor>-executor-secret-<type>` headers, grouped by executor.
pub fn executor_secrets(req: &HttpRequest) -> ActivitySecrets {
    const MARK: &str = "-executor-secret-";
    let mut secrets = ActivitySecrets::new();
    for (name, value) in req.headers() {
        let name = name.as_str();
        let Some(rest) = name.strip_prefix("x-odm-") else {
            continue;
        };
        let Some(split) = rest.find(MARK) else {
            continue;
        };
        let (executor, kind) = (&rest[..split], &rest[split + MARK.len()..]);
        let Ok(value) = value.to_str() else { continue };
        if executor.is_empty() || kind.is_empty() {
            continue;
        }
        secrets
            .entry(executor.to_owned())
            .or_default()
            .insert(kind.to_owned(), Secret::new(value));
    }
    secrets
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn secret_headers_are_grouped_by_executor_and_type() {
        let req = TestRequest::default()
            .insert_header(("x-odm-azure-devops-executor-secret-pat", "p4t"))
            .insert_header(("X-ODM-gitlab-executor-secret-token", "t0k"))
            .insert_header(("x-odm-other", "ignored"))
            .to_http_request();
        let secrets = executor_secrets(&req);
        assert_eq!(secrets["azure-devops"]["pat"].expose(), "p4t");
        assert_eq!(secrets["gitlab"]["token"].expose(), "t0k");
        assert_eq!(secrets.len(), 2);
    }
}
