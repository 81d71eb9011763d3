//! A run for people: its state now (Runs – Get) and its logs (Logs – List with signed content
//! URLs, then each log's text), the last `max_bytes` bytes of them joined under one header line
//! per log. The logs are read from the last one backwards and only as far as the bytes asked
//! for reach: earlier logs are never fetched, and no log is held in memory beyond its tail.

use actix_web::http::Method;
use serde_json::Value;
use tracing::Instrument;

use super::errors::{error_for, Purpose};
use super::http::{Payload, Replay};
use super::{AzureDevOpsExecutor, RunLocation};
use crate::executor::view::utf8_tail;
use crate::executor::{ExecutorError, RunLogs, RunRef, RunView, Secrets};

/// One log of a run, as Logs – List describes it.
#[derive(Debug, Clone, PartialEq)]
struct LogEntry {
    id: i32,
    line_count: Option<i64>,
    signed_url: Option<String>,
}

impl AzureDevOpsExecutor {
    /// Runs – Get, as Azure spells state and result, with the run's web page.
    pub(super) async fn view_run(
        &self,
        run: &RunRef,
        secrets: &Secrets,
    ) -> Result<RunView, ExecutorError> {
        let location = RunLocation::from_json(&run.0)?;
        let span = tracing::info_span!("azure_devops_run_view", executor = %self.name,
            pipeline = location.pipeline_id, run_id = location.run_id);
        let answer = self.get_run(&location, secrets).instrument(span).await?;
        let text = |pointer: &str| {
            answer
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(RunView {
            state: text("/state").unwrap_or_else(|| "unknown".into()),
            result: text("/result"),
            url: text("/_links/web/href"),
        })
    }

    pub(super) async fn read_logs(
        &self,
        run: &RunRef,
        secrets: &Secrets,
        max_bytes: usize,
    ) -> Result<RunLogs, ExecutorError> {
        let location = RunLocation::from_json(&run.0)?;
        let span = tracing::info_span!("azure_devops_logs", executor = %self.name,
            pipeline = location.pipeline_id, run_id = location.run_id);
        self.joined_logs(&location, secrets, max_bytes)
            .instrument(span)
            .await
    }

    async fn joined_logs(
        &self,
        location: &RunLocation,
        secrets: &Secrets,
        max_bytes: usize,
    ) -> Result<RunLogs, ExecutorError> {
        let list = self
            .call(
                Method::GET,
                &location.logs_url(&self.base_url, None),
                Payload::Empty,
                Replay::Safe,
                secrets,
                Purpose::Logs,
            )
            .await?;
        let mut logs = log_entries(&list)?;
        logs.sort_by_key(|log| log.id);
        // Newest first, each keeping only what still fits; then back in order.
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let mut budget = max_bytes;
        let mut truncated = false;
        for log in logs.iter().rev() {
            if budget == 0 {
                truncated = true;
                break;
            }
            let (mut text, cut) = self.log_text(location, log, secrets, budget).await?;
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            if cut {
                // Its header (and every earlier log) lies before the bytes kept.
                pieces.push(text);
                truncated = true;
                break;
            }
            let mut piece = header(log).into_bytes();
            piece.extend_from_slice(&text);
            budget = budget.saturating_sub(piece.len());
            pieces.push(piece);
        }
        let joined: Vec<u8> = pieces.into_iter().rev().flatten().collect();
        let (text, cut) = utf8_tail(&joined, max_bytes);
        Ok(RunLogs {
            text,
            truncated: truncated || cut,
        })
    }

    /// The last `keep` bytes of one log's text (and whether more came before them), from its
    /// signed URL, asking Logs – Get for one when the list gave none.
    async fn log_text(
        &self,
        location: &RunLocation,
        log: &LogEntry,
        secrets: &Secrets,
        keep: usize,
    ) -> Result<(Vec<u8>, bool), ExecutorError> {
        let url = match &log.signed_url {
            Some(url) => url.clone(),
            None => {
                let answer = self
                    .call(
                        Method::GET,
                        &location.logs_url(&self.base_url, Some(log.id)),
                        Payload::Empty,
                        Replay::Safe,
                        secrets,
                        Purpose::Logs,
                    )
                    .await?;
                signed_url(&answer).ok_or_else(|| {
                    ExecutorError::InvalidTask(format!(
                        "Azure DevOps gave no signed content URL for log {} of run {}",
                        log.id, location.run_id
                    ))
                })?
            }
        };
        match self.http.get_tail(&url, keep).await? {
            Ok(tail) => Ok(tail),
            Err(reply) => Err(error_for(&reply, Purpose::Logs)),
        }
    }
}

/// `==> log 3 (42 lines) <==`, as `tail` heads each file it shows.
fn header(log: &LogEntry) -> String {
    match log.line_count {
        Some(1) => format!("==> log {} (1 line) <==\n", log.id),
        Some(n) => format!("==> log {} ({n} lines) <==\n", log.id),
        None => format!("==> log {} <==\n", log.id),
    }
}

/// The logs of a LogCollection; an answer without a `logs` array is not one.
fn log_entries(list: &Value) -> Result<Vec<LogEntry>, ExecutorError> {
    let items = list.get("logs").and_then(Value::as_array).ok_or_else(|| {
        ExecutorError::InvalidTask(
            "Azure DevOps answered the run logs request without a list of logs".into(),
        )
    })?;
    Ok(items
        .iter()
        .filter_map(|item| {
            let id = i32::try_from(item.get("id")?.as_i64()?).ok()?;
            Some(LogEntry {
                id,
                line_count: item.get("lineCount").and_then(Value::as_i64),
                signed_url: signed_url(item),
            })
        })
        .collect())
}

fn signed_url(log: &Value) -> Option<String> {
    log.pointer("/signedContent/url")
        .and_then(Value::as_str)
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .map(str::to_owned)
}

#[cfg(test)]
#[path = "tests_logs.rs"]
mod tests;
