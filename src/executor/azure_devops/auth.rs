//! Who the executor is to Azure DevOps: a service principal (OAuth 2.0 client credentials
//! against Microsoft Entra, token cached) proving itself with a client secret or with a
//! federated token (workload identity: a JWT file the platform rotates, no secret of ours), a
//! PAT, or the activity's own `pat`/`token` secret.
//!
//! `Credentials` are shared (`Send + Sync`, cloned cheaply): the engine's executor and the
//! executor API's, on every worker thread, use one token cache per configured executor.
//!
//! Header values are marked sensitive so they never show in `Debug` output; nothing here logs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use actix_web::http::Method;
use base64::Engine as _;
use serde_json::Value;
use tokio::sync::Mutex;

use super::errors::{entra_error, strip_bom};
use super::http::{HttpClient, Payload, Replay};
use crate::executor::{ExecutorError, Secrets};
use crate::secret::Secret;

/// The longest a token is kept, whatever `expires_in` says (Entra's tokens live about an hour).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Tokens are renewed this long before they expire (at most), so a token never runs out
/// between being read from the cache and reaching Azure.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(300);

type MakeHeader = fn(&str) -> Result<HeaderValue, ()>;

#[derive(Clone)]
pub(crate) enum Credentials {
    ClientCredentials(Arc<TokenSource>),
    Pat(HeaderValue),
}

/// The header for one request, and whether it came from the token cache (a 401 then means the
/// token went stale and one fresh token is worth a try).
pub(crate) struct Authorization {
    pub header: HeaderValue,
    pub cached: bool,
}

impl Credentials {
    pub fn pat(pat: &Secret) -> Result<Credentials, String> {
        Ok(Credentials::Pat(basic(pat.expose()).map_err(|_| {
            "contains characters that cannot be sent in an HTTP header".to_owned()
        })?))
    }

    /// The activity's secrets win over the executor's own identity: `token` (a bearer token),
    /// then `pat`.
    pub async fn authorization(
        &self,
        secrets: &Secrets,
        http: &HttpClient,
    ) -> Result<Authorization, ExecutorError> {
        let kinds: [(&str, MakeHeader); 2] = [("token", bearer), ("pat", basic)];
        for (kind, make) in kinds {
            if let Some(secret) = secrets.get(kind) {
                if secret.is_empty() {
                    return Err(ExecutorError::Unauthorized(format!(
                        "the activity's `{kind}` secret for this executor is empty"
                    )));
                }
                let header = make(secret.expose()).map_err(|_| {
                    ExecutorError::Unauthorized(format!(
                        "the activity's `{kind}` secret contains characters that cannot be sent \
                         in an HTTP header"
                    ))
                })?;
                return Ok(Authorization {
                    header,
                    cached: false,
                });
            }
        }
        match self {
            Credentials::Pat(header) => Ok(Authorization {
                header: header.clone(),
                cached: false,
            }),
            Credentials::ClientCredentials(source) => Ok(Authorization {
                header: source.authorization(http).await?,
                cached: true,
            }),
        }
    }

    /// Drops a cached token Azure refused, unless it was already replaced.
    pub async fn forget(&self, stale: &HeaderValue) {
        if let Credentials::ClientCredentials(source) = self {
            let mut slot = source.slot.lock().await;
            if slot.token.as_ref().is_some_and(|t| t.header == *stale) {
                slot.token = None;
            }
        }
    }
}

pub(crate) struct TokenSource {
    token_url: String,
    client_id: String,
    proof: Proof,
    scope: String,
    /// Held across the token request: concurrent callers queue behind the one refreshing.
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    token: Option<CachedToken>,
    /// The last refresh that failed, shared with the callers that were waiting for it so a
    /// wrong secret costs one Entra request, not one per queued task.
    failure: Option<(Instant, ExecutorError)>,
}

struct CachedToken {
    header: HeaderValue,
    renew_at: Instant,
}

/// How the service principal proves who it is to Entra.
pub(crate) enum Proof {
    ClientSecret(Secret),
    /// Workload identity: the JWT in this file, sent as `client_assertion`. Read at each
    /// refresh, never cached: the platform rotates it (AKS every hour or so).
    FederatedTokenFile(PathBuf),
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl TokenSource {
    pub fn new(token_url: &str, client_id: &str, proof: Proof, scope: &str) -> Self {
        TokenSource {
            token_url: token_url.trim().to_owned(),
            client_id: client_id.trim().to_owned(),
            proof,
            scope: scope.trim().to_owned(),
            slot: Mutex::new(Slot::default()),
        }
    }

    async fn authorization(&self, http: &HttpClient) -> Result<HeaderValue, ExecutorError> {
        let asked_at = Instant::now();
        let mut slot = self.slot.lock().await;
        if let Some(token) = &slot.token {
            if Instant::now() < token.renew_at {
                return Ok(token.header.clone());
            }
        }
        if let Some((failed_at, error)) = &slot.failure {
            if *failed_at >= asked_at {
                return Err(error.clone());
            }
        }
        match self.fetch(http).await {
            Ok(token) => {
                let header = token.header.clone();
                slot.token = Some(token);
                slot.failure = None;
                Ok(header)
            }
            Err(error) => {
                slot.token = None;
                slot.failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// The federated token as the file holds it now. The file's path is no secret; its
    /// content is, and is never put in an error.
    fn federated_token(path: &PathBuf) -> Result<Secret, ExecutorError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ExecutorError::Unauthorized(format!(
                "the workload identity token file {} cannot be read: {e} (executors.*.auth.token_file)",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ExecutorError::Unauthorized(format!(
                "the workload identity token file {} is empty (executors.*.auth.token_file)",
                path.display()
            )));
        }
        Ok(Secret::new(token.to_owned()))
    }

    async fn fetch(&self, http: &HttpClient) -> Result<CachedToken, ExecutorError> {
        let assertion;
        let proof: [(&str, &str); 2] = match &self.proof {
            Proof::ClientSecret(secret) => [("client_secret", secret.expose()), ("", "")],
            Proof::FederatedTokenFile(path) => {
                assertion = Self::federated_token(path)?;
                [
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.expose()),
                ]
            }
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
        ];
        form.extend(proof.into_iter().filter(|(name, _)| !name.is_empty()));
        form.push(("scope", self.scope.as_str()));
        let started = Instant::now();
        let reply = http
            .send(
                Method::POST,
                &self.token_url,
                None,
                Payload::Form(&form),
                Replay::Safe,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(entra_error(&reply));
        }
        let malformed = |what: &str| {
            ExecutorError::Unauthorized(format!(
                "Microsoft Entra answered the token request without {what}: check \
                 executors.*.auth.token_url"
            ))
        };
        let json: Value =
            serde_json::from_slice(strip_bom(&reply.body)).map_err(|_| malformed("JSON"))?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("an access_token"))?;
        let lifetime =
            token_lifetime(json.get("expires_in")).ok_or_else(|| malformed("expires_in"))?;
        let expires_in = lifetime.as_secs();
        let margin = (lifetime / 4).min(MAX_RENEW_MARGIN);
        tracing::info!(
            expires_in,
            "obtained an Azure DevOps access token from Microsoft Entra"
        );
        Ok(CachedToken {
            header: bearer(token).map_err(|_| malformed("a usable access_token"))?,
            // Counted from the request, not the answer: the lifetime started when Entra issued it.
            renew_at: started + lifetime - margin,
        })
    }
}

/// `expires_in` in seconds: a number (Entra v2) or a numeric string (v1), at most
/// [`MAX_TOKEN_LIFETIME`] (a larger one, `u64::MAX` or `1e300`, saturates there: it cannot
/// overflow the renewal time). Negative or not a number: `None`.
fn token_lifetime(expires_in: Option<&Value>) -> Option<Duration> {
    let secs = match expires_in? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(secs).map_or(MAX_TOKEN_LIFETIME, |d| d.min(MAX_TOKEN_LIFETIME)),
    )
}

fn basic(pat: &str) -> Result<HeaderValue, ()> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(":{pat}"));
    sensitive(format!("Basic {encoded}"))
}

fn bearer(token: &str) -> Result<HeaderValue, ()> {
    sensitive(format!("Bearer {}", token.trim()))
}

fn sensitive(value: String) -> Result<HeaderValue, ()> {
    let mut header = HeaderValue::from_str(&value).map_err(|_| ())?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_is_colon_then_pat_and_hidden_from_debug() {
        let header = basic("my-pat").unwrap();
        assert_eq!(header.to_str().unwrap(), "Basic Om15LXBhdA==");
        assert!(!format!("{header:?}").contains("Om15"));
    }

    /// `expires_in: u64::MAX` once overflowed the renewal `Instant` and panicked the engine.
    #[test]
    fn expires_in_saturates_at_a_day_and_refuses_nonsense() {
        use serde_json::json;
        let day = MAX_TOKEN_LIFETIME;
        for (given, want) in [
            (json!(3599), Some(Duration::from_secs(3599))),
            (json!("3599"), Some(Duration::from_secs(3599))),
            (json!(0), Some(Duration::ZERO)),
            (json!(u64::MAX), Some(day)),
            (json!(u64::MAX.to_string()), Some(day)),
            (json!(1e300), Some(day)),
            (json!("1e300"), Some(day)),
            (json!("inf"), Some(day)),
            (json!(-1), None),
            (json!("-3600"), None),
            (json!(i64::MIN), None),
            (json!("NaN"), None),
            (json!("an hour"), None),
            (json!(null), None),
            (json!([3600]), None),
        ] {
            assert_eq!(token_lifetime(Some(&given)), want, "{given}");
        }
        assert_eq!(token_lifetime(None), None);
        let renew_at = Instant::now() + day - (day / 4).min(MAX_RENEW_MARGIN);
        assert!(renew_at > Instant::now());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        assert!(bearer("x\ny").is_err());
        assert!(basic("x\ny").is_ok());
    }
}
