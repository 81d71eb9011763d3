//! Everything the simulator knows, behind one lock (held briefly, never across an await): the
//! HTTP workers and the run timers share it from several threads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use super::config::{Behaviour, FaultSpec, PipelineSpec, SimResult, SimulatorConfig};
use super::hooks::{HookDelivery, HookSubscription};

const REQUEST_LOG_LIMIT: usize = 10_000;

/// One run as a test or an operator wants to see it: what was asked, and what happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: i32,
    pub organization: String,
    pub project: String,
    pub pipeline_id: i32,
    pub pipeline_name: String,
    /// `inProgress` or `completed`.
    pub state: String,
    /// `succeeded`, `failed` or `canceled` once completed.
    pub result: Option<String>,
    /// The RunPipelineParameters body exactly as received.
    pub request_body: Value,
    pub template_parameters: BTreeMap<String, String>,
    pub ref_name: Option<String>,
    /// `bearer` or `pat`: how the run request authenticated (never the credential).
    pub authenticated_with: String,
    pub created_date: String,
    /// When the run request arrived, in microseconds since the Unix epoch (for the benchmark:
    /// the time from a callback's answer to the next run request).
    pub received_at_us: u64,
    /// 1 for the first run that completed, 2 for the next… (`/_sim/runs?completedAfter=`).
    pub completion_seq: Option<u64>,
    pub finished_date: Option<String>,
    pub callback: Option<CallbackRecord>,
    #[serde(skip)]
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRecord {
    pub url: String,
    /// What was PATCHed (`null` = no body).
    pub body: Option<Value>,
    /// The callback server's HTTP status, when it answered.
    pub status: Option<u16>,
    /// When its answer came back, in microseconds since the Unix epoch.
    pub answered_at_us: Option<u64>,
    pub error: Option<String>,
}

/// A preview run (`previewRun: true`) the simulator accepted: what it was asked, how it
/// authenticated. No run exists for it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewRecord {
    pub pipeline_id: i32,
    /// The RunPipelineParameters body exactly as received.
    pub request_body: Value,
    pub template_parameters: BTreeMap<String, String>,
    /// `bearer` or `pat` (never the credential).
    pub authenticated_with: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub fault: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub token_requests: u64,
    pub tokens_issued: u64,
    /// Run requests received, whatever their answer (faults included).
    pub run_requests: u64,
    pub runs_created: u64,
    /// Preview runs answered with `finalYaml` (they create no run).
    pub previews: u64,
    pub callbacks_sent: u64,
    pub requests: u64,
    /// Tokens issued for a federated token (workload identity), and assertions refused.
    pub assertions_accepted: u64,
    pub assertions_refused: u64,
}

pub(crate) struct SimState {
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub config: SimulatorConfig,
    pub pipelines: BTreeMap<(String, String, i32), PipelineSpec>,
    pub runs: BTreeMap<i32, RunRecord>,
    /// Completed run ids, oldest first: the ones forgotten beyond `retain_runs`.
    pub completed: VecDeque<i32>,
    /// Runs completed since the start (never reset): the last one's `completion_seq`.
    pub completions: u64,
    pub next_run_id: i32,
    pub tokens: HashMap<String, Instant>,
    pub faults: VecDeque<FaultSpec>,
    pub requests: VecDeque<RequestRecord>,
    /// The last previews answered (at most `REQUEST_LOG_LIMIT`).
    pub previews: VecDeque<PreviewRecord>,
    pub stats: Stats,
    /// Service hook subscriptions (`hooks.rs`), what they were sent, and how many events.
    pub hooks: Vec<HookSubscription>,
    pub hook_deliveries: VecDeque<HookDelivery>,
    pub hook_events: u64,
    /// `http://<address>`, for the links inside events.
    pub base_url: String,
}

impl SimState {
    pub fn new(config: SimulatorConfig) -> SimState {
        let pipelines = config
            .pipelines
            .iter()
            .map(|p| (key(&p.organization, &p.project, p.id), p.clone()))
            .collect();
        let hooks = config.service_hooks.clone();
        SimState {
            inner: Mutex::new(Inner {
                config,
                pipelines,
                runs: BTreeMap::new(),
                completed: VecDeque::new(),
                completions: 0,
                next_run_id: 1000,
                tokens: HashMap::new(),
                faults: VecDeque::new(),
                requests: VecDeque::new(),
                previews: VecDeque::new(),
                stats: Stats::default(),
                hooks,
                hook_deliveries: VecDeque::new(),
                hook_events: 0,
                base_url: String::new(),
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the simulator down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pipelines are looked up as Azure does: organization and project names ignore case.
pub(crate) fn key(organization: &str, project: &str, id: i32) -> (String, String, i32) {
    (organization.to_lowercase(), project.to_lowercase(), id)
}

impl Inner {
    pub fn issue_token(&mut self) -> (String, u64) {
        let token = format!("sim.{:032x}", rand::thread_rng().gen::<u128>());
        let lifetime = self.config.token_expires_in_secs;
        let now = Instant::now();
        self.tokens.retain(|_, expires| *expires > now);
        self.tokens
            .insert(token.clone(), now + Duration::from_secs(lifetime));
        self.stats.tokens_issued += 1;
        (token, lifetime)
    }

    /// The first fault matching this request, used up by one.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultSpec> {
        let index = self.faults.iter().position(|f| {
            f.count > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && glob(&f.path, path)
        })?;
        let fault = self.faults[index].clone();
        self.faults[index].count -= 1;
        if self.faults[index].count == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    pub fn log_preview(&mut self, record: PreviewRecord) {
        self.stats.previews += 1;
        if self.previews.len() == REQUEST_LOG_LIMIT {
            self.previews.pop_front();
        }
        self.previews.push_back(record);
    }

    pub fn log_request(&mut self, record: RequestRecord) {
        self.stats.requests += 1;
        if self.requests.len() == REQUEST_LOG_LIMIT {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    /// Ends an in-progress run; a run already ended (cancelled) stays as it is.
    pub fn complete(&mut self, run_id: i32, result: &str) -> bool {
        match self.runs.get_mut(&run_id) {
            Some(run) if run.state != "completed" => {
                self.completions += 1;
                run.completion_seq = Some(self.completions);
                run.state = "completed".into();
                run.result = Some(result.into());
                run.finished_date = Some(now_text());
                self.completed.push_back(run_id);
                if self.completed.len() > self.config.retain_runs.max(1) {
                    if let Some(oldest) = self.completed.pop_front() {
                        self.runs.remove(&oldest);
                    }
                }
                true
            }
            _ => false,
        }
    }
}

impl Inner {
    /// The retained runs completed after the `after`-th completion, in completion order.
    pub fn completed_after(&self, after: u64) -> Vec<&RunRecord> {
        // `completed` holds the last completions in order; its first has this sequence number.
        let first = self.completions + 1 - self.completed.len() as u64;
        let skip = (after + 1).saturating_sub(first) as usize;
        self.completed
            .iter()
            .skip(skip)
            .filter_map(|id| self.runs.get(id))
            .collect()
    }
}

impl SimResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SimResult::Succeeded => "succeeded",
            SimResult::Failed => "failed",
        }
    }
}

/// Microseconds since the Unix epoch: one clock for run requests and callback answers.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `*` matches any run of characters (including `/`); everything else literally.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("*", "/a/b"));
        assert!(glob("*/runs", "/o/p/_apis/pipelines/1/runs"));
        assert!(glob(
            "/o/*/pipelines/*/runs",
            "/o/p q/_apis/pipelines/1/runs"
        ));
        assert!(!glob("*/runs", "/o/p/_apis/pipelines/1/runs/5"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("a*a", "a"));
    }
}
