//! `odm-devops demo`: the whole flow on a fresh machine, with no account anywhere. It starts
//! the service (on a SQLite file in a temporary folder, removed at the end) and the Azure
//! DevOps + Entra simulator in this process, stores a descriptor, runs its stages dev → test →
//! prod through the REST API over HTTP as a user would, and tells what happens: each task's
//! pipeline run and the parameters it was sent, the callback it got, and the lifecycle rows.

mod dry_run;
mod report;
mod scenario;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use self::report::Report;
use self::scenario::{PRODUCT, STAGES, VERSION};
use crate::app::Application;
use crate::config::{LogFormat, LogSettings};
use crate::simulator::{HookSubscription, RunRecord, Simulator, SimulatorHandle};

const DEVOPS: &str = "/api/v1/pp/devops";
const POLL: Duration = Duration::from_millis(50);
/// What a failed write of the story means (a closed pipe, a full disk).
const OUTPUT: &str = "cannot write the demo's output";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long each simulated pipeline run works before calling back.
    pub run_delay: Duration,
    /// A stage not finished by then fails the demo.
    pub stage_timeout: Duration,
    /// Where the demo's temporary folder is made.
    pub temp_dir: PathBuf,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            run_delay: Duration::from_millis(500),
            stage_timeout: Duration::from_secs(30),
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// Warnings only: the demo's own lines tell the story (the subscriber is global).
pub fn quiet_logs() -> LogSettings {
    LogSettings {
        format: LogFormat::Pretty,
        filter: "warn".into(),
    }
}

/// Plays the demo, writing to `out`. Runs inside an actix System (the service's engine lives
/// on the calling thread). Everything it started is stopped and its folder removed, whatever
/// the outcome. An error says where the demo stopped, in words for the person who ran it.
pub async fn run(out: &mut dyn Write, options: &DemoOptions) -> anyhow::Result<()> {
    let played = async {
        let folder = TempFolder::create(&options.temp_dir)?;
        let sim = Simulator::start(scenario::simulator_config(options.run_delay))
            .await
            .context("the Azure DevOps simulator did not start")?;
        let result = serve_and_play(out, options, &folder.0, &sim).await;
        sim.stop().await;
        result
    };
    played.await.context("the demo failed")
}

async fn serve_and_play(
    out: &mut dyn Write,
    options: &DemoOptions,
    folder: &Path,
    sim: &SimulatorHandle,
) -> anyhow::Result<()> {
    let settings = scenario::settings(folder, sim)?;
    let app = Application::build(settings)
        .await
        .context("the service did not start")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    sim.add_hook(HookSubscription {
        url: format!("{base}{DEVOPS}/hooks/azure-devops"),
        username: "azure-devops".into(),
        password: scenario::HOOK_SECRET.into(),
    });
    let server = app.server_handle();
    let service = actix_web::rt::spawn(app.run_until_stopped());
    let mut demo = Demo {
        report: Report::new(out),
        http: awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish(),
        base,
        sim,
        options,
    };
    let result = demo.play(folder).await;
    server.stop(true).await;
    let _ = service.await;
    result
}

struct Demo<'a> {
    report: Report<'a>,
    http: awc::Client,
    base: String,
    sim: &'a SimulatorHandle,
    options: &'a DemoOptions,
}

/// How far the story of one task has been told.
#[derive(Default)]
struct Told {
    run: Option<i32>,
    callback: bool,
    outcome: bool,
}

impl Demo<'_> {
    async fn play(&mut self, folder: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        self.report
            .opening(&self.base, &self.sim.base_url(), folder)
            .context(OUTPUT)?;
        let path = format!("/api/v1/pp/registry/products/{PRODUCT}/versions/{VERSION}");
        self.dry_run_catches_the_draft_s_mistake(&path).await?;
        let (status, _) = self
            .call("PUT", &path, Some(scenario::descriptor()))
            .await?;
        if status != 201 && status != 200 {
            bail!("storing the descriptor answered HTTP {status}");
        }
        self.report.descriptor_stored(&path).context(OUTPUT)?;
        self.dry_run_passes().await?;
        let mut early = None;
        for stage in STAGES {
            if stage == STAGES[1] {
                // The last stage before the one it needs: refused by the stage order.
                early = Some(self.refused_start(STAGES[2]).await?);
            }
            let planned = early.filter(|_| stage == STAGES[2]);
            self.run_stage(stage, planned).await?;
        }
        let (_, rows) = self
            .call(
                "GET",
                &format!("{DEVOPS}/lifecycles/{PRODUCT}/{VERSION}"),
                None,
            )
            .await?;
        self.report.lifecycle(&rows).context(OUTPUT)?;
        self.wait_for_notifications().await?;
        let received: Vec<Value> = self
            .sim
            .listeners()
            .received(scenario::LISTENER)
            .into_iter()
            .map(|r| r.body)
            .collect();
        self.report
            .notifications(scenario::LISTENER, &received)
            .context(OUTPUT)?;
        let stats = self.sim.stats();
        self.report
            .closing(
                started.elapsed(),
                stats.runs_created,
                stats.callbacks_sent,
                stats.tokens_issued,
            )
            .context(OUTPUT)
    }

    /// Creates a PLANNED activity of `stage` and tries to start it too early: the stage order
    /// (`policy.stage_order`) refuses. Its id, to start it once allowed.
    async fn refused_start(&mut self, stage: &str) -> anyhow::Result<i64> {
        let path = format!("{DEVOPS}/activities");
        let body = json!({"dataProductId": PRODUCT, "dataProductVersion": VERSION, "stage": stage});
        let (status, activity) = self.call("POST", &path, Some(body)).await?;
        let Some(id) = activity["id"].as_i64().filter(|_| status == 201) else {
            bail!("creating the {stage} activity answered HTTP {status}: {activity}");
        };
        let start = format!("{DEVOPS}/activities/{id}/status?action=START");
        let (status, refusal) = self.call("PATCH", &start, None).await?;
        if status != 422 || refusal["code"] != "42204" {
            bail!(
                "starting {stage} before its time answered HTTP {status}, not 422 42204: {refusal}"
            );
        }
        let why = refusal["message"].as_str().unwrap_or_default();
        self.report.start_refused(stage, id, why).context(OUTPUT)?;
        Ok(id)
    }

    /// Starts the stage's activity (`planned`, or a new one), then tells each task's story as it
    /// happens until the activity is PROCESSED.
    async fn run_stage(&mut self, stage: &str, planned: Option<i64>) -> anyhow::Result<()> {
        let started = Instant::now();
        let (path, method, expected, body) = match planned {
            Some(id) => (
                format!("{DEVOPS}/activities/{id}/status?action=START"),
                "PATCH",
                200,
                None,
            ),
            None => (
                format!("{DEVOPS}/activities?startAfterCreation=true"),
                "POST",
                201,
                Some(
                    json!({"dataProductId": PRODUCT, "dataProductVersion": VERSION, "stage": stage}),
                ),
            ),
        };
        let (status, answer) = self.call(method, &path, body).await?;
        let id = match (status == expected, planned.or(answer["id"].as_i64())) {
            (true, Some(id)) => id,
            _ => bail!("starting the {stage} activity answered HTTP {status}: {answer}"),
        };
        self.report
            .stage_started(stage, &path, id)
            .context(OUTPUT)?;
        let mut told: HashMap<i64, Told> = HashMap::new();
        loop {
            let (_, tasks) = self
                .call("GET", &format!("{DEVOPS}/tasks?activityId={id}"), None)
                .await?;
            for task in tasks.as_array().into_iter().flatten() {
                self.tell(stage, task, told.entry(id_of(task)).or_default())?;
            }
            let (_, activity) = self
                .call("GET", &format!("{DEVOPS}/activities/{id}"), None)
                .await?;
            let all_told = told.len() == tasks.as_array().map_or(0, Vec::len)
                && told.values().all(|t| t.outcome);
            match activity["status"].as_str().unwrap_or_default() {
                "PROCESSED" if all_told => {
                    let took = started.elapsed();
                    return self.report.stage_reached(stage, id, took).context(OUTPUT);
                }
                status @ ("FAILED" | "ABORTED") => bail!(
                    "the {stage} activity {id} ended {status}: {}",
                    activity["errors"].as_str().unwrap_or("no errors given")
                ),
                status if started.elapsed() > self.options.stage_timeout => bail!(
                    "stage {stage} did not finish within {} s: activity {id} is still {status}; \
                     its tasks: {}",
                    self.options.stage_timeout.as_secs_f64(),
                    task_statuses(&tasks)
                ),
                _ => actix_web::rt::time::sleep(POLL).await,
            }
        }
    }

    /// Tells what is new about one task: its run, its callback, its outcome, in that order.
    fn tell(&mut self, stage: &str, task: &Value, told: &mut Told) -> anyhow::Result<()> {
        let position = task["position"].as_u64().unwrap_or(0) as usize;
        if told.run.is_none() {
            let Some(run) = self.run_of_task(id_of(task)) else {
                return Ok(());
            };
            let written = scenario::written_params(stage, position);
            self.report
                .run_started(task, &run, &written)
                .context(OUTPUT)?;
            told.run = Some(run.id);
        }
        // The run's record is complete (callback included) once the run has ended.
        let Some(run) = told.run.and_then(|id| self.sim.run(id)) else {
            return Ok(());
        };
        if run.state != "completed" {
            return Ok(());
        }
        if !told.callback {
            if run.callback.is_some() {
                self.report.callback(&run).context(OUTPUT)?;
            } else {
                // No callback step: told once Azure's service hook was delivered.
                let hooks = self.sim.hook_deliveries();
                let Some(hook) = hooks.iter().find(|d| d.run_id == run.id) else {
                    return Ok(());
                };
                self.report.service_hook(hook).context(OUTPUT)?;
            }
            told.callback = true;
        }
        let status = task["status"].as_str().unwrap_or_default();
        if !told.outcome && matches!(status, "PROCESSED" | "FAILED" | "ABORTED") {
            self.report.task_finished(task).context(OUTPUT)?;
            told.outcome = true;
        }
        Ok(())
    }

    /// The run the simulator created for a task, found through the task id in its callbackRef.
    fn run_of_task(&self, task_id: i64) -> Option<RunRecord> {
        let marker = format!("{DEVOPS}/tasks/{task_id}/status?");
        self.sim.runs().into_iter().find(|run| {
            run.template_parameters
                .get("callbackRef")
                .is_some_and(|c| c.contains(&marker))
        })
    }

    /// Until the outbox has nothing left to send (events go out a moment after the changes
    /// they report), 5 s at most.
    async fn wait_for_notifications(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let path = format!("{DEVOPS}/notifications?status=pending");
        while Instant::now() < deadline {
            let (_, pending) = self.call("GET", &path, None).await?;
            if pending.as_array().is_some_and(Vec::is_empty) {
                break;
            }
            actix_web::rt::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// One request to the service, as a user would send it; the status and the JSON answer
    /// (`null` when empty).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let method = method.parse().expect("a valid HTTP method");
        let request = self.http.request(method, &url);
        let sent = match &body {
            Some(json) => request.send_json(json).await,
            None => request.send().await,
        };
        // awc's send error is not `Send`: keep its text.
        let mut response = sent.map_err(|e| anyhow!("{url}: {e}"))?;
        let bytes = response
            .body()
            .limit(4 << 20)
            .await
            .with_context(|| format!("{url}: the answer could not be read"))?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| format!("{url} did not answer JSON"))?
        };
        Ok((response.status().as_u16(), json))
    }
}

fn id_of(task: &Value) -> i64 {
    task["id"].as_i64().unwrap_or(0)
}

fn task_statuses(tasks: &Value) -> String {
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let text = |key: &str| t[key].as_str().unwrap_or("?").to_owned();
            format!("{} {}", text("name"), text("status"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A folder of our own under `parent`, removed when dropped.
struct TempFolder(PathBuf);

impl TempFolder {
    fn create(parent: &Path) -> anyhow::Result<TempFolder> {
        let name = format!("odm-devops-demo-{}", uuid::Uuid::new_v4().simple());
        let path = parent.join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create the folder {}", path.display()))?;
        Ok(TempFolder(path))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
