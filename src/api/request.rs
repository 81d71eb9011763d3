//! Reading the parts of a request: ids in the path, query parameters, secret headers.

use std::collections::HashMap;

use actix_web::HttpRequest;

use super::error::ApiError;
use crate::db::Page;
use crate::keys::ActivitySecrets;
use crate::secret::Secret;

pub struct Query(HashMap<String, String>);

/// The longest page a list answers (`?limit`): a client wanting more asks again with `?after`.
pub const MAX_LIMIT: i64 = 1000;

impl Query {
    /// The query string's parameters, decoded. A parameter given twice is refused (400 40001)
    /// rather than read one way here and another way elsewhere.
    pub fn of(req: &HttpRequest) -> Result<Query, ApiError> {
        Query::parse(req.query_string())
    }

    pub fn parse(text: &str) -> Result<Query, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(text)
            .map_err(|e| ApiError::bad_query(format!("the query string is malformed: {e}")))?
            .into_inner();
        let mut query = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            no_nul(&name, "a query parameter name").map_err(ApiError::into_bad_query)?;
            no_nul(&value, &format!("query parameter {name:?}"))
                .map_err(ApiError::into_bad_query)?;
            if query.contains_key(&name) {
                return Err(ApiError::bad_query(format!(
                    "query parameter {name:?} is given more than once: give it once"
                )));
            }
            query.insert(name, value);
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

    /// `?action=…` as the status routes read it (upper case). The perimeter decides with it
    /// whether a request is a callback, so both read it the same way.
    pub fn action(&self) -> Option<String> {
        self.get("action").map(|a| a.to_ascii_uppercase())
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_query(format!(
                "{name} must be true or false, found {other:?}"
            ))),
        }
    }

    pub fn number(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_query(format!("{name} must be a whole number, found {v:?}"))
                })
            })
            .transpose()
    }

    /// `?after=<id>&limit=<n>` of a list ordered by id; both optional (none: the whole list).
    pub fn page(&self) -> Result<Page, ApiError> {
        let in_range = |name: &str, min: i64, max: i64, expected: &str| {
            let value = self.number(name)?;
            match value {
                Some(n) if !(min..=max).contains(&n) => Err(ApiError::bad_query(format!(
                    "{name} must be {expected}, found {n}"
                ))),
                _ => Ok(value),
            }
        };
        Ok(Page {
            after: in_range("after", 0, i64::MAX, "an id (a whole number, 0 or more)")?,
            limit: in_range(
                "limit",
                1,
                MAX_LIMIT,
                &format!("a whole number from 1 to {MAX_LIMIT}"),
            )?,
        })
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
                    ApiError::bad_query(format!("status must be one of {}, found {v:?}", names()))
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
    let text = fully_decoded(req.match_info().get(name).unwrap_or_default());
    no_nul(&text, &format!("the {name} in the path"))?;
    Ok(text)
}

/// A path segment as its sender meant it. The router decodes every `%XX` but `%2B`, `%2F` and
/// `%25` (so that they do not change which route matches); a segment is one value, where they
/// mean `+`, `/` and `%` as anywhere else: `versions/1.0.0%2Bb1` is version `1.0.0+b1`.
fn fully_decoded(segment: &str) -> String {
    let mut text = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        text.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_uppercase);
        let decoded = match code.as_deref() {
            Some("2B") => Some('+'),
            Some("2F") => Some('/'),
            Some("25") => Some('%'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                text.push(c);
                rest = &rest[at + 3..];
            }
            None => {
                text.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    text.push_str(rest);
    text
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
    fn the_three_escapes_the_router_keeps_are_decoded_once() {
        assert_eq!(fully_decoded("1.0.0%2Bb1"), "1.0.0+b1");
        assert_eq!(fully_decoded("a%2fb%2Fc"), "a/b/c");
        // Once: `%252B` was sent for the text `%2B`.
        assert_eq!(fully_decoded("100%25"), "100%");
        assert_eq!(fully_decoded("%252B"), "%2B");
        assert_eq!(fully_decoded("50%"), "50%");
        assert_eq!(fully_decoded("%2"), "%2");
        assert_eq!(fully_decoded("é%2B"), "é+");
    }

    #[test]
    fn a_parameter_given_twice_is_refused_however_it_is_spelled() {
        for query in [
            "action=STOP&action=ABORT",
            "action=STOP&%61ction=ABORT",
            "a=1&b=2&a=1",
            "token=&token=x",
        ] {
            let Err(err) = Query::parse(query) else {
                panic!("{query} accepted")
            };
            assert_eq!((err.status.as_u16(), err.code), (400, "40001"), "{query}");
        }
        let query = Query::parse("action=stop&Action=ABORT&x=1").unwrap();
        assert_eq!(query.action().as_deref(), Some("STOP"));
    }

    #[test]
    fn pages_are_bounded_and_refusals_name_the_parameter() {
        let page = Query::parse("after=7&limit=1000").unwrap().page().unwrap();
        assert_eq!((page.after, page.limit), (Some(7), Some(1000)));
        let all = Query::parse("").unwrap().page().unwrap();
        assert_eq!((all.after, all.limit), (None, None));
        for (query, named) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("after=-1", "after"),
            ("after=1.5", "after"),
            ("after=99999999999999999999", "after"),
        ] {
            let err = Query::parse(query).unwrap().page().unwrap_err();
            assert_eq!(err.code, "40001", "{query}");
            assert!(err.message.starts_with(named), "{query}: {}", err.message);
        }
    }

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
