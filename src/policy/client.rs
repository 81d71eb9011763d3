//! The client of ODM's policy service: `POST {address}/api/v1/pp/policy/validation`. It owns its
//! base URL and its timeout, like the registry's and the executors' clients.

use std::time::Duration;

use serde::Deserialize;

use super::{FailedPolicy, PolicyError, ValidationRequest, Verdict};
use crate::http_client::client;
use crate::registry::RemoteFailure;

/// An answer larger than this is not a verdict we can use.
const MAX_ANSWER_BYTES: usize = 4 << 20;
const SERVICE: &str = "ODM's policy service";

#[derive(Clone)]
pub struct PolicyClient {
    url: String,
    timeout: Duration,
}

/// ODM's `ValidationResponseResource` (the fields the verdict needs; others ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    policy_results: Option<Vec<PolicyResult>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyResult {
    result: Option<bool>,
    policy: Option<Policy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    id: Option<i64>,
    name: Option<String>,
    blocking_flag: Option<bool>,
}

impl PolicyClient {
    pub fn new(address: &str, timeout_ms: u64) -> PolicyClient {
        PolicyClient {
            url: format!(
                "{}/api/v1/pp/policy/validation",
                address.trim().trim_end_matches('/')
            ),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// The verdict on `request`. No answer within the timeout → `Unreachable`; any answer but a
    /// 200 with a verdict → `Failed`. Callers hear which service failed; the URL and the answer
    /// go to `detail`, for the log only.
    pub async fn validate(&self, request: &ValidationRequest) -> Result<Verdict, PolicyError> {
        let url = &self.url;
        let unreachable = |e: &dyn std::fmt::Display| {
            PolicyError::Unreachable(RemoteFailure::new(
                format!("{SERVICE} is unreachable"),
                format!("POST {url} ({}): {e}", request.event),
            ))
        };
        let mut response = client()
            .post(url)
            .insert_header(("Accept", "application/json"))
            .timeout(self.timeout)
            .send_json(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| unreachable(&e))?;
        if status.as_u16() != 200 {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(PolicyError::Failed(RemoteFailure::new(
                format!("{SERVICE} answered {}", status.as_u16()),
                format!(
                    "POST {url} ({}) answered {status}: {excerpt}",
                    request.event
                ),
            )));
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            PolicyError::Failed(RemoteFailure::new(
                format!("{SERVICE} answered with no verdict"),
                format!(
                    "POST {url} ({}) answered with invalid JSON: {e}",
                    request.event
                ),
            ))
        })?;
        Ok(verdict(answer))
    }
}

/// Blocked iff some policy has `result == false` and `policy.blockingFlag == true` (ODM's rule);
/// other failures are advisory.
fn verdict(answer: Answer) -> Verdict {
    let mut verdict = Verdict::default();
    for entry in answer.policy_results.unwrap_or_default() {
        if entry.result != Some(false) {
            continue;
        }
        let policy = entry.policy.unwrap_or(Policy {
            id: None,
            name: None,
            blocking_flag: None,
        });
        let failed = FailedPolicy {
            id: policy.id,
            name: policy.name.unwrap_or_else(|| "(unnamed)".into()),
        };
        if policy.blocking_flag == Some(true) {
            verdict.blocking.push(failed);
        } else {
            verdict.advisory.push(failed);
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_needs_a_failed_result_and_the_blocking_flag() {
        let answer: Answer = serde_json::from_value(serde_json::json!({
            "result": false,
            "policyResults": [
                {"result": false, "policy": {"id": 1, "rootId": 1, "name": "gdpr", "blockingFlag": true}},
                {"result": false, "policy": {"id": 2, "name": "naming", "blockingFlag": false}},
                {"result": true, "policy": {"id": 3, "name": "ok", "blockingFlag": true}},
                {"result": false, "policy": {"id": 4, "name": "unflagged"}},
                {"result": null, "policy": {"id": 5, "name": "unknown", "blockingFlag": true}}
            ]
        }))
        .unwrap();
        let verdict = verdict(answer);
        assert_eq!(
            verdict.blocking,
            [FailedPolicy {
                id: Some(1),
                name: "gdpr".into()
            }]
        );
        let advisory: Vec<_> = verdict.advisory.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(advisory, ["naming", "unflagged"]);
    }

    #[test]
    fn an_answer_without_policy_results_passes() {
        let answer: Answer = serde_json::from_str(r#"{"result": true}"#).unwrap();
        assert!(!verdict(answer).is_blocked());
    }
}
