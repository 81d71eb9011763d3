//! A stand-in for Azure DevOps and Microsoft Entra, over real HTTP, for tests, the demo, the
//! benchmark and for trying pipelines without a cloud account (`odm-devops simulate-azure`).
//!
//! # Azure routes (checked against the 7.1 descriptions)
//! * `POST /{tenant}/oauth2/v2.0/token` — client credentials grant (form: grant_type, client_id,
//!   client_secret, scope), or workload identity (`client_assertion_type` jwt-bearer and a
//!   `client_assertion` listed in `federatedTokens`, instead of the secret). Issues bearer tokens living `tokenExpiresInSecs`; a wrong value is
//!   refused with Entra's JSON (`invalid_client` / AADSTS7000215 for a wrong secret, …).
//! * `POST /{org}/{project}/_apis/pipelines/{pipelineId}/runs?api-version=7.1` — Runs – Run
//!   Pipeline. The body must be a RunPipelineParameters (unknown keys refused, templateParameters
//!   values strings, stagesToSkip strings, variables `{value, isSecret}`), the pipeline must be
//!   declared, and every template parameter declared by it (`Unexpected parameter 'x'`, as Azure
//!   says), required ones given.
//! * `GET /{org}/{project}/_apis/pipelines/{pipelineId}/runs/{runId}?api-version=7.1` — Runs – Get.
//! * `PATCH /{org}/{project}/_apis/build/builds/{buildId}?api-version=7.1` — Builds – Update
//!   Build; `{"status": "cancelling"}` ends the run `canceled` without a callback.
//! * `GET /{org}/{project}/_apis/pipelines/{pipelineId}/runs/{runId}/logs[/{logId}]` — Logs –
//!   List / Get (`$expand=signedContent` adds each log's signed URL); the signed URL
//!   (`…/signedlogcontent/{logId}?urlExpires&urlSigningMethod=HMACV1&urlSignature`) serves the
//!   text without credentials (`logs.rs`).
//! * The same Run Pipeline route with `"previewRun": true` is checked exactly like a run (the
//!   same parameter rules) and answers 200 `{"finalYaml": …}`, the pipeline's YAML with the
//!   given parameters as defaults; no run is created (`preview.rs`, `GET /_sim/previews`).
//!
//! Every Azure route wants `api-version=7.1` and a bearer token it issued (unexpired) or a
//! configured PAT as `Basic base64(":" + pat)`. Without valid credentials it answers like Azure:
//! 203 with an HTML sign-in page, or 401 when the request has `X-TFS-FedAuthRedirect: Suppress`.
//! Errors have Azure's shape: `{"$id", "innerException", "message", "typeName", "typeKey",
//! "errorCode", "eventId"}`.
//!
//! A run works for `delayMs` (or the default delay), then PATCHes its `callbackRef` parameter
//! with `{"status": "PROCESSED", "results": …}` or `{"status": "FAILED", "errors": …}` (or no body,
//! or not at all, per its pipeline's `behaviour`), then completes as `succeeded`/`failed`.
//! `${{ parameters.<name> }}` and `${{ run.id }}` in `results`/`errors` take the run's values.
//!
//! # Control routes
//! * `GET /_sim/pipelines`; `PUT /_sim/pipelines/{org}/{project}/{id}` with `{"name",
//!   "parameters": ["vmName", {"name": "env", "required": true}], "behaviour": {"delayMs",
//!   "result": "succeeded"|"failed", "callback": "body"|"empty"|"none", "results", "errors",
//!   "manual"}}`; `DELETE` the same path.
//! * `POST /_sim/faults` with `{"path": "*/runs", "method": "POST", "kind": "rateLimit" |
//!   "unavailable" | "serverError" | "badGatewayAfterProcessing" | "slow" | "signInPage" | "bom",
//!   "count": 1, "retryAfterSecs": 1, "delayMs": 5000}`: the next `count` matching requests get
//!   it (`path` is a glob on the decoded path). `GET` lists pending faults, `DELETE` clears them.
//! * `GET /_sim/runs`, `GET /_sim/runs/{id}`: runs with their exact request bodies, states and
//!   callbacks (the last `retainRuns` completed ones, 10,000 by default, and every run in
//!   progress; a forgotten run answers 404 like a deleted one). `POST /_sim/runs/{id}/finish` (optional body: a behaviour) ends a run now.
//!   For `odm-devops bench`, a run has `receivedAtUs` (when its run request arrived) and its
//!   callback `answeredAtUs` (when the callback's answer came back), in microseconds since the
//!   Unix epoch: the time from one task's callback answer to the next task's run request; and
//!   `completionSeq` (1 for the first run to complete, 2 for the next…):
//!   `GET /_sim/runs?completedAfter=N` lists only the runs completed after the N-th, in that
//!   order, to follow runs as they end.
//! * `GET /_sim/requests` (last 10,000 requests: method, path, status, fault), `GET /_sim/stats`
//!   (token requests, tokens issued, run requests, runs created, callbacks sent).
//! * `POST /_sim/tokens/expire` expires every issued token; `POST /_sim/reset` forgets runs,
//!   faults, requests, tokens and counters (pipelines stay).
//! * `/_sim/listeners/{name}…`: notification listeners that record what they receive
//!   (`listeners.rs`).
//! * `GET`/`POST`/`DELETE /_sim/hooks` (`{"url", "username", "password"}`): service hook
//!   subscriptions, sent "Run state changed" with HTTP Basic when a run completes;
//!   `GET /_sim/hooks/deliveries`: what was sent and how it was answered (`hooks.rs`).

mod answer;
mod azure;
mod cli;
mod config;
mod control;
mod entra;
mod hooks;
mod listeners;
mod logs;
mod pipeline;
mod preview;
mod state;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

pub use self::cli::{load as load_config, serve_cli, SimulateAzureArgs};
pub use self::config::{
    Behaviour, CallbackMode, FaultKind, FaultSpec, ParameterSpec, PipelineSpec, SimResult,
    SimulatorConfig, AZURE_DEVOPS_SCOPE,
};
pub use self::hooks::{HookDelivery, HookSubscription, RUN_STATE_CHANGED};
pub use self::listeners::{ListenerSinks, Received, SinkBehaviour};
use self::state::SimState;
pub use self::state::{CallbackRecord, PreviewRecord, RequestRecord, RunRecord, Stats};
use crate::config::{AzureAuthSettings, AzureDevOpsSettings, ClientCredentialsSettings};
use crate::secret::Secret;

pub struct Simulator;

impl Simulator {
    /// Serves on 127.0.0.1 with a free port. Call it inside an actix System (the server's
    /// accept loop runs on it; requests are served by `config.workers` threads of their own).
    pub async fn start(config: SimulatorConfig) -> std::io::Result<SimulatorHandle> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: SimulatorConfig, bind: &str) -> std::io::Result<SimulatorHandle> {
        let workers = config.workers.max(1);
        let tenant = config.tenant.clone();
        let state = Arc::new(SimState::new(config));
        let data = web::Data::from(Arc::clone(&state));
        let sinks = ListenerSinks::default();
        let sinks_data = web::Data::new(sinks.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(sinks_data.clone())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                // Before `/_sim`'s scope, which would take (and 404) its paths.
                .configure(listeners::routes)
                .configure(control::routes)
                .route("/{tenant}/oauth2/v2.0/token", web::post().to(entra::token))
                .route(
                    "/{org}/{project}/_apis/pipelines/{pipeline_id}/runs",
                    web::post().to(azure::run_pipeline),
                )
                .route(
                    "/{org}/{project}/_apis/pipelines/{pipeline_id}/runs/{run_id}",
                    web::get().to(azure::get_run),
                )
                .route(
                    "/{org}/{project}/_apis/pipelines/{pipeline_id}/runs/{run_id}/logs",
                    web::get().to(logs::list),
                )
                .route(
                    "/{org}/{project}/_apis/pipelines/{pipeline_id}/runs/{run_id}/logs/{log_id}",
                    web::get().to(logs::get),
                )
                .route(
                    "/{org}/{project}/_apis/pipelines/{pipeline_id}/runs/{run_id}/signedlogcontent/{log_id}",
                    web::get().to(logs::content),
                )
                .route(
                    "/{org}/{project}/_apis/build/builds/{build_id}",
                    web::patch().to(azure::update_build),
                )
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().json(serde_json::json!({
                        "$id": "1", "innerException": null,
                        "message": "The resource cannot be found (not simulated).",
                        "typeName": "Microsoft.VisualStudio.Services.WebApi.VssResourceNotFoundException, Microsoft.VisualStudio.Services.WebApi",
                        "typeKey": "VssResourceNotFoundException", "errorCode": 0, "eventId": 3000}))
                }))
        })
        .workers(workers)
        .disable_signals()
        .bind(bind)?;
        let address = server.addrs()[0];
        state.lock().base_url = format!("http://{address}");
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(SimulatorHandle {
            address,
            tenant,
            state,
            sinks,
            server: handle,
        })
    }
}

/// A running simulator. Its methods may be called from any thread.
#[derive(Clone)]
pub struct SimulatorHandle {
    address: SocketAddr,
    tenant: String,
    state: Arc<SimState>,
    sinks: ListenerSinks,
    server: ServerHandle,
}

impl SimulatorHandle {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What `executors.*.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url(), self.tenant)
    }

    /// Executor settings that authenticate as the simulator's service principal.
    pub fn executor_settings(&self) -> AzureDevOpsSettings {
        let config = self.state.lock().config.clone();
        AzureDevOpsSettings {
            active: true,
            base_url: self.base_url(),
            auth: AzureAuthSettings::ClientCredentials(ClientCredentialsSettings {
                token_url: self.token_url(),
                client_id: config.client_id,
                client_secret: Secret::new(config.client_secret),
                scope: config.scope,
            }),
            check_after_callback: false,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            max_retries: 4,
            retry_base_delay_ms: 50,
            retry_max_delay_ms: 5_000,
            service_hook_secret: None,
        }
    }

    /// The `address` of a notification listener named `name` (ODM or webhook).
    pub fn listener_address(&self, name: &str) -> String {
        format!("{}/_sim/listeners/{name}", self.base_url())
    }

    /// The notification listeners' sinks: what each received, how each answers.
    pub fn listeners(&self) -> &ListenerSinks {
        &self.sinks
    }

    pub fn runs(&self) -> Vec<RunRecord> {
        self.state.lock().runs.values().cloned().collect()
    }

    pub fn run(&self, id: i32) -> Option<RunRecord> {
        self.state.lock().runs.get(&id).cloned()
    }

    /// The preview runs (`previewRun: true`) it answered with `finalYaml`, oldest first.
    pub fn previews(&self) -> Vec<PreviewRecord> {
        self.state.lock().previews.iter().cloned().collect()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.lock().requests.iter().cloned().collect()
    }

    pub fn stats(&self) -> Stats {
        self.state.lock().stats.clone()
    }

    pub fn token_requests(&self) -> u64 {
        self.state.lock().stats.token_requests
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.lock().stats.tokens_issued
    }

    pub fn put_pipeline(&self, spec: PipelineSpec) {
        control::put(&self.state, spec);
    }

    /// The federated tokens Entra trusts from now on (a rotation: the old ones stop working).
    pub fn set_federated_tokens(&self, tokens: Vec<String>) {
        self.state.lock().config.federated_tokens = tokens;
    }

    pub fn add_fault(&self, fault: FaultSpec) {
        self.state.lock().faults.push_back(fault);
    }

    pub fn expire_tokens(&self) {
        let now = Instant::now();
        self.state
            .lock()
            .tokens
            .values_mut()
            .for_each(|expires| *expires = now);
    }

    /// Ends a run now (its pipeline's behaviour, or `behaviour`); false if it was not running.
    pub async fn finish_run(&self, id: i32, behaviour: Option<Behaviour>) -> bool {
        let behaviour = match behaviour {
            Some(b) => b,
            None => match self.run(id) {
                Some(run) => run.behaviour,
                None => return false,
            },
        };
        pipeline::finish(&self.state, id, &behaviour).await
    }

    /// Cancels a run now, as Builds – Update Build would (no callback); false if it had ended.
    pub fn cancel_run(&self, id: i32) -> bool {
        let cancelled = self.state.lock().complete(id, "canceled");
        if cancelled {
            hooks::announce_later(Arc::clone(&self.state), id);
        }
        cancelled
    }

    /// From now on, each completed run is POSTed to `subscription` (a service hook).
    pub fn add_hook(&self, subscription: HookSubscription) {
        self.state.lock().hooks.push(subscription);
    }

    /// No more service hooks.
    pub fn clear_hooks(&self) {
        self.state.lock().hooks.clear();
    }

    /// The service hook events sent so far (the last 1,000), with their answers.
    pub fn hook_deliveries(&self) -> Vec<HookDelivery> {
        self.state.lock().hook_deliveries.iter().cloned().collect()
    }

    /// The run once completed (after its callback, if any), or `None` after `timeout`.
    pub async fn wait_for_completion(&self, id: i32, timeout: Duration) -> Option<RunRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.run(id) {
                Some(run) if run.state == "completed" => return Some(run),
                _ if Instant::now() >= deadline => return None,
                _ => actix_web::rt::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}
