//! The demo's lines, for a platform engineer seeing the product for the first time: what was
//! asked of the service, which pipeline each task ran with which parameters (and where a
//! placeholder's value came from), what the pipeline called back, and where the lifecycle is.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::scenario::{self, PRODUCT, STAGES, VERSION};
use crate::simulator::{HookDelivery, RunRecord};

const RULE_WIDTH: usize = 78;

pub struct Report<'a> {
    out: &'a mut dyn Write,
}

impl<'a> Report<'a> {
    pub fn new(out: &'a mut dyn Write) -> Report<'a> {
        Report { out }
    }

    pub fn opening(&mut self, service: &str, simulator: &str, folder: &Path) -> io::Result<()> {
        let out = &mut self.out;
        writeln!(
            out,
            "odm-devops demo: data product {PRODUCT} {VERSION} promoted {} on Azure DevOps",
            STAGES.join(" → ")
        )?;
        writeln!(
            out,
            "pipelines (simulated here, with its Microsoft Entra sign-in). No account needed.\n"
        )?;
        writeln!(
            out,
            "  odm-devops    {service}  (SQLite in {}, removed at the end)",
            folder.display()
        )?;
        writeln!(
            out,
            "  Azure DevOps  {simulator}  (organization {}, project \"{}\")",
            scenario::ORGANIZATION,
            scenario::PROJECT
        )
    }

    pub fn descriptor_stored(&mut self, path: &str) -> io::Result<()> {
        let descriptor = scenario::descriptor();
        let stages: Vec<String> = STAGES
            .iter()
            .map(|stage| {
                let tasks = descriptor["internalComponents"]["lifecycleInfo"][stage]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| t["template"]["name"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{stage}: {tasks}")
            })
            .collect();
        writeln!(self.out, "  descriptor    PUT {path}")?;
        writeln!(self.out, "                {}", stages.join(" · "))
    }

    pub fn stage_started(&mut self, stage: &str, path: &str, activity: i64) -> io::Result<()> {
        self.rule(&format!("stage {stage}"))?;
        let verb = if path.contains("action=START") {
            "PATCH"
        } else {
            "POST"
        };
        writeln!(self.out, "  {verb} {path} → activity {activity} started")
    }

    /// A START a policy gate refused, and why.
    pub fn start_refused(&mut self, stage: &str, activity: i64, why: &str) -> io::Result<()> {
        self.rule(&format!("stage {stage}, too early"))?;
        writeln!(
            self.out,
            "  PATCH …/activities/{activity}/status?action=START → 422, the activity stays PLANNED:\n  {why}"
        )
    }

    /// A dry run's verdict and problems, and how many runs exist (none were created by it).
    pub fn dry_run(
        &mut self,
        what: &str,
        valid: bool,
        problems: &[String],
        runs: u64,
    ) -> io::Result<()> {
        self.rule(&format!("dry run of {what}"))?;
        writeln!(
            self.out,
            "  POST …/activities?dryRun=true → 200, {}; pipeline runs so far: {runs}",
            if valid {
                "valid: every task checked by Azure DevOps (previewRun)"
            } else {
                "not valid"
            }
        )?;
        for problem in problems {
            writeln!(self.out, "  ✘ {problem}")?;
        }
        Ok(())
    }

    /// The run a task started, with the parameters exactly as Azure DevOps received them.
    pub fn run_started(
        &mut self,
        task: &Value,
        run: &RunRecord,
        written: &Value,
    ) -> io::Result<()> {
        let out = &mut self.out;
        writeln!(
            out,
            "\n  task {} · {}",
            task["position"],
            task["name"].as_str().unwrap_or("?")
        )?;
        let branch = run
            .ref_name
            .as_deref()
            .map(|r| format!(", {r}"))
            .unwrap_or_default();
        writeln!(
            out,
            "    ▶ pipeline   {} (id {}) in {}/{}{branch} → run {}",
            run.pipeline_name, run.pipeline_id, run.organization, run.project, run.id
        )?;
        let mut params: Vec<(String, String, Option<String>)> = run
            .template_parameters
            .iter()
            .filter(|(name, _)| *name != "callbackRef")
            .map(|(name, value)| {
                let origin = written[name]
                    .as_str()
                    .filter(|w| w.contains("${"))
                    .map(|w| format!("← {w}"));
                (name.clone(), value.clone(), origin)
            })
            .collect();
        if let Some(callback) = run.template_parameters.get("callbackRef") {
            params.push(("callbackRef".into(), hide_token(callback), None));
        }
        self.table("params", &params)?;
        if let Some(variables) = run.request_body["variables"].as_object() {
            let rows: Vec<_> = variables
                .iter()
                .map(|(name, v)| {
                    (
                        name.clone(),
                        v["value"].as_str().unwrap_or("").to_owned(),
                        None,
                    )
                })
                .collect();
            self.table("variables", &rows)?;
        }
        let skipped: Vec<&str> = run.request_body["stagesToSkip"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !skipped.is_empty() {
            writeln!(
                self.out,
                "      {:<12} {}",
                "stagesToSkip",
                skipped.join(", ")
            )?;
        }
        Ok(())
    }

    pub fn callback(&mut self, run: &RunRecord) -> io::Result<()> {
        let Some(callback) = &run.callback else {
            return writeln!(
                self.out,
                "    ◀ no callback: the run ended {}",
                run.result.as_deref().unwrap_or("without a result")
            );
        };
        let answer = match (callback.status, &callback.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(error)) => format!("not delivered ({error})"),
            (None, None) => "not delivered".into(),
        };
        let told = match &callback.body {
            None => "no body (PROCESSED)".to_owned(),
            Some(body) => {
                let status = body["status"].as_str().unwrap_or("?");
                match (&body["results"], &body["errors"]) {
                    (Value::Null, Value::Null) => status.to_owned(),
                    (Value::Null, errors) => format!("{status} {errors}"),
                    (results, _) => format!("{status} {results}"),
                }
            }
        };
        writeln!(
            self.out,
            "    ◀ callback   PATCH callbackRef → {answer}: {told}"
        )
    }

    /// A run without a callback step, completed through Azure DevOps' service hook.
    pub fn service_hook(&mut self, hook: &HookDelivery) -> io::Result<()> {
        let answer = match (hook.status, &hook.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(error)) => format!("not delivered ({error})"),
            (None, None) => "not delivered".into(),
        };
        writeln!(
            self.out,
            "    ◀ service hook  no callback step: Azure DevOps' \"Run state changed\" ({}) → \
             POST /api/v1/pp/devops/hooks/azure-devops → {answer}; the service polls the run now",
            hook.result.as_deref().unwrap_or("no result")
        )
    }

    pub fn task_finished(&mut self, task: &Value) -> io::Result<()> {
        let took = match (task["startedAt"].as_str(), task["finishedAt"].as_str()) {
            (Some(start), Some(end)) => between(start, end)
                .map(|d| format!(" in {:.1} s", d.as_secs_f64()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        match task["status"].as_str().unwrap_or("?") {
            "PROCESSED" => writeln!(self.out, "    ✔ task PROCESSED{took}"),
            status => writeln!(
                self.out,
                "    ✘ task {status}{took}: {}",
                task["errors"].as_str().unwrap_or("no errors given")
            ),
        }
    }

    pub fn stage_reached(&mut self, stage: &str, activity: i64, took: Duration) -> io::Result<()> {
        writeln!(
            self.out,
            "\n  ✔ stage {stage} reached in {:.1} s (activity {activity} PROCESSED)",
            took.as_secs_f64()
        )
    }

    /// The lifecycle rows of the product version, the current one last.
    pub fn lifecycle(&mut self, rows: &Value) -> io::Result<()> {
        self.rule(&format!("lifecycle of {PRODUCT} {VERSION}"))?;
        let out = &mut self.out;
        writeln!(
            out,
            "  GET /api/v1/pp/devops/lifecycles/{PRODUCT}/{VERSION}"
        )?;
        writeln!(
            out,
            "  {:<4} {:<6} {:<31} finished at",
            "id", "stage", "started at"
        )?;
        let rows = rows.as_array().map(Vec::as_slice).unwrap_or_default();
        for row in rows {
            writeln!(
                out,
                "  {:<4} {:<6} {:<31} {}",
                row["id"].as_i64().unwrap_or(0),
                row["stage"].as_str().unwrap_or("?"),
                row["startedAt"].as_str().unwrap_or(""),
                row["finishedAt"].as_str().unwrap_or("(current)")
            )?;
        }
        if let Some(current) = rows.iter().find(|r| r["finishedAt"].is_null()) {
            writeln!(
                out,
                "  results of the current stage ({}): {}",
                current["stage"].as_str().unwrap_or("?"),
                current["results"].as_str().unwrap_or("none")
            )?;
        }
        Ok(())
    }

    /// What the ODM observer listening to the service received, in order.
    pub fn notifications(&mut self, listener: &str, events: &[Value]) -> io::Result<()> {
        self.rule(&format!("events received by the ODM observer {listener}"))?;
        let out = &mut self.out;
        writeln!(
            out,
            "  POST /api/v1/pp/notification/dispatch, {} events, in order:",
            events.len()
        )?;
        for event in events {
            let after = &event["afterState"];
            let about = match (
                after["task"]["name"].as_str(),
                after["activity"]["stage"].as_str(),
            ) {
                (Some(task), _) => format!(
                    "task {task}, {}",
                    after["task"]["status"].as_str().unwrap_or("?")
                ),
                (None, Some(stage)) => format!(
                    "stage {stage}, {}",
                    after["activity"]["status"].as_str().unwrap_or("?")
                ),
                (None, None) => String::new(),
            };
            writeln!(
                out,
                "  #{:<4} {:<34} {:>5}  {about}",
                event["id"].as_i64().unwrap_or(0),
                event["type"].as_str().unwrap_or("?"),
                event["entityId"].as_str().unwrap_or("?"),
            )?;
        }
        Ok(())
    }

    pub fn closing(
        &mut self,
        took: Duration,
        runs: u64,
        callbacks: u64,
        tokens: u64,
    ) -> io::Result<()> {
        writeln!(
            self.out,
            "\nDone in {:.1} s: {} stages, {runs} pipeline runs, {callbacks} callbacks, {tokens} \
             Entra token{} for them all.",
            took.as_secs_f64(),
            STAGES.len(),
            if tokens == 1 { "" } else { "s" }
        )?;
        writeln!(
            self.out,
            "Next: point the azure-devops executor at your own organisation (README, \"Azure DevOps\")."
        )
    }

    fn rule(&mut self, title: &str) -> io::Result<()> {
        let fill = RULE_WIDTH.saturating_sub(title.chars().count() + 4);
        writeln!(self.out, "\n── {title} {}", "─".repeat(fill))
    }

    /// `label  name = value  ← origin`, names and values aligned.
    fn table(&mut self, label: &str, rows: &[(String, String, Option<String>)]) -> io::Result<()> {
        let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let value_width = rows
            .iter()
            .filter(|r| r.2.is_some())
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0);
        for (i, (name, value, origin)) in rows.iter().enumerate() {
            let label = if i == 0 { label } else { "" };
            match origin {
                Some(origin) => writeln!(
                    self.out,
                    "      {label:<12} {name:<name_width$} = {value:<value_width$}   {origin}"
                )?,
                None => writeln!(self.out, "      {label:<12} {name:<name_width$} = {value}")?,
            }
        }
        Ok(())
    }
}

/// The callback URL without its token: it is the pipeline's credential.
fn hide_token(callback_ref: &str) -> String {
    match callback_ref.split_once("token=") {
        Some((before, _)) => format!("{before}token=…"),
        None => callback_ref.to_owned(),
    }
}

fn between(start: &str, end: &str) -> Option<Duration> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    (end - start).to_std().ok()
}
