//! The pipelines logs API of a run (7.1 description, "Logs"): Logs – List and Logs – Get
//! answer `Log`s (`id`, `createdOn`, `lastChangedOn`, `lineCount`, `url`, and with
//! `$expand=signedContent` a `SignedUrl` {`url`, `signatureExpires`}); the signed URL serves
//! the log's text to anyone holding it until it expires, without credentials, as Azure's does.
//!
//! The text is what an agent would write for the run so far: job initialisation, checkout, the
//! pipeline's step (its parameters, `behaviour.logLines` more lines of output, then how it
//! ended), its callback, and the job's end once the run completed.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::answer::{azure_error, respond, take_fault, Answer};
use super::azure::{base_url, find_run, guard, project_url, run_not_found};
use super::state::{RunRecord, SimState};
use super::validate;

/// How long a signed content URL works.
const SIGNATURE_SECS: i64 = 3600;

type RunPath = web::Path<(String, String, String, String)>;

/// Logs – List.
pub(crate) async fn list(
    req: HttpRequest,
    path: RunPath,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, pipeline_id, run_id) = path.into_inner();
    let gate = guard(&state, &req);
    let answer = gate
        .admitted
        .and_then(|_| {
            let run = run_of(&state, &organization, &project, &pipeline_id, &run_id)?;
            let signed = expand_signed(&req);
            let base = base_url(&req);
            let logs: Vec<Value> = texts(&run)
                .iter()
                .map(|(id, text)| log_json(&state, &run, &base, *id, text, signed))
                .collect();
            let url = format!("{}/logs", run_path(&run, &base));
            Ok(Answer::Json(
                StatusCode::OK,
                json!({"logs": logs, "url": url}),
            ))
        })
        .unwrap_or_else(|refusal| refusal);
    respond(&state, &req, gate.fault.as_ref(), answer).await
}

/// Logs – Get.
pub(crate) async fn get(
    req: HttpRequest,
    path: web::Path<(String, String, String, String, String)>,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, pipeline_id, run_id, log_id) = path.into_inner();
    let gate = guard(&state, &req);
    let answer = gate
        .admitted
        .and_then(|_| {
            let run = run_of(&state, &organization, &project, &pipeline_id, &run_id)?;
            let log_id = validate::int32("logId", &log_id)?;
            let texts = texts(&run);
            let (id, text) = texts
                .iter()
                .find(|(id, _)| *id == log_id)
                .ok_or_else(|| log_not_found(log_id))?;
            let json = log_json(
                &state,
                &run,
                &base_url(&req),
                *id,
                text,
                expand_signed(&req),
            );
            Ok(Answer::Json(StatusCode::OK, json))
        })
        .unwrap_or_else(|refusal| refusal);
    respond(&state, &req, gate.fault.as_ref(), answer).await
}

/// A signed URL's text: no credentials, a valid unexpired signature.
pub(crate) async fn content(
    req: HttpRequest,
    path: web::Path<(String, String, String, String, String)>,
    query: web::Query<SignedQuery>,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, pipeline_id, run_id, log_id) = path.into_inner();
    let (fault, refusal) = take_fault(&state, &req);
    let answer = match refusal {
        Some(refusal) => refusal,
        None => (|| {
            let run = run_of(&state, &organization, &project, &pipeline_id, &run_id)?;
            let log_id = validate::int32("logId", &log_id)?;
            let expected = signature(&state, run.id, log_id, query.url_expires);
            let now = chrono::Utc::now().timestamp();
            if query.url_signature != expected || query.url_expires < now {
                return Err(azure_error(
                    StatusCode::FORBIDDEN,
                    "The signature of this log URL is not valid or has expired.",
                    "AccessDeniedException",
                ));
            }
            let text = texts(&run)
                .into_iter()
                .find(|(id, _)| *id == log_id)
                .map(|(_, text)| text)
                .ok_or_else(|| log_not_found(log_id))?;
            Ok(Answer::Text(StatusCode::OK, text))
        })()
        .unwrap_or_else(|refusal| refusal),
    };
    respond(&state, &req, fault.as_ref(), answer).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignedQuery {
    #[serde(default)]
    url_expires: i64,
    #[serde(default)]
    url_signature: String,
}

fn run_of(
    state: &SimState,
    organization: &str,
    project: &str,
    pipeline_id: &str,
    run_id: &str,
) -> Result<RunRecord, Answer> {
    let pipeline_id = validate::int32("pipelineId", pipeline_id)?;
    let run_id = validate::int32("runId", run_id)?;
    let inner = state.lock();
    find_run(&inner, organization, project, run_id)
        .filter(|run| run.pipeline_id == pipeline_id)
        .cloned()
        .ok_or_else(|| run_not_found(run_id))
}

fn expand_signed(req: &HttpRequest) -> bool {
    req.query_string().split('&').any(|pair| {
        pair.eq_ignore_ascii_case("$expand=signedContent")
            || pair.eq_ignore_ascii_case("%24expand=signedContent")
    })
}

fn run_path(run: &RunRecord, base: &str) -> String {
    format!(
        "{}/_apis/pipelines/{}/runs/{}",
        project_url(run, base),
        run.pipeline_id,
        run.id
    )
}

fn log_json(
    state: &SimState,
    run: &RunRecord,
    base: &str,
    id: i32,
    text: &str,
    signed: bool,
) -> Value {
    let changed = run.finished_date.as_deref().unwrap_or(&run.created_date);
    let mut json = json!({
        "id": id,
        "createdOn": run.created_date,
        "lastChangedOn": changed,
        "lineCount": text.lines().count(),
        "url": format!("{}/logs/{id}", run_path(run, base)),
    });
    if signed {
        let expires = chrono::Utc::now().timestamp() + SIGNATURE_SECS;
        let url = format!(
            "{}/signedlogcontent/{id}?urlExpires={expires}&urlSigningMethod=HMACV1&urlSignature={}",
            run_path(run, base),
            signature(state, run.id, id, expires)
        );
        let until = chrono::DateTime::from_timestamp(expires, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        json["signedContent"] = json!({"url": url, "signatureExpires": until});
    }
    json
}

/// HMAC-SHA256 of the run, the log and the expiry, keyed with the simulator's client secret.
fn signature(state: &SimState, run_id: i32, log_id: i32, expires: i64) -> String {
    let key = state.lock().config.client_secret.clone();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{run_id}/{log_id}/{expires}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn log_not_found(id: i32) -> Answer {
    azure_error(
        StatusCode::NOT_FOUND,
        format!("Log with ID {id} does not exist for this run."),
        "LogNotFoundException",
    )
}

/// The run's logs so far, by id, as an agent writes them (timestamped, `##[section]` marks).
pub(crate) fn texts(run: &RunRecord) -> Vec<(i32, String)> {
    let at = chrono::DateTime::parse_from_rfc3339(&run.created_date)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f0000Z").to_string())
        .unwrap_or_else(|_| run.created_date.clone());
    let lines =
        |items: Vec<String>| -> String { items.iter().map(|l| format!("{at} {l}\n")).collect() };
    let done = run.state == "completed";
    let finishing = |step: &str| done.then(|| format!("##[section]Finishing: {step}"));
    let mut logs = vec![
        (1, lines(vec![
            "##[section]Starting: Initialize job".into(),
            "Agent name: 'Azure Pipelines 2'".into(),
            "Agent machine name: 'sim-agent'".into(),
            "Current agent version: '4.248.0'".into(),
            format!("Build number: sim.{} (pipeline {})", run.id, run.pipeline_name),
            "##[section]Finishing: Initialize job".into(),
        ])),
        (2, lines(vec![
            format!("##[section]Starting: Checkout self@{}", run.ref_name.as_deref().unwrap_or("refs/heads/main")),
            "Syncing repository: self (Git)".into(),
            "git fetch --force --tags --prune --progress --no-recurse-submodules origin --depth=1".into(),
            "##[section]Finishing: Checkout".into(),
        ])),
    ];
    let step = run.pipeline_name.as_str();
    let mut output = vec![format!("##[section]Starting: {step}")];
    // Never the callbackRef: it carries the callback's token.
    output.extend(
        run.template_parameters
            .iter()
            .filter(|(name, _)| name.as_str() != "callbackRef")
            .map(|(name, value)| format!("parameter {name} = {value}")),
    );
    output.extend(
        (1..=run.behaviour.log_lines).map(|n| format!("étape {n}: déploiement en cours ✓")),
    );
    match run.result.as_deref() {
        Some("succeeded") => output.push(format!("{step}: done ✓")),
        Some("failed") => output.push(format!("##[error]{}", run.behaviour.errors)),
        Some("canceled") => output.push("##[error]The operation was canceled.".into()),
        _ => {}
    }
    output.extend(finishing(step));
    logs.push((3, lines(output)));
    if let Some(callback) = &run.callback {
        let outcome = match (callback.status, &callback.error) {
            (Some(status), _) => format!("the service answered HTTP {status}"),
            (None, Some(error)) => format!("##[warning]the call failed: {error}"),
            (None, None) => "no answer".into(),
        };
        logs.push((
            4,
            lines(vec![
                "##[section]Starting: Call back odm-devops".into(),
                format!("PATCH callbackRef: {outcome}"),
                "##[section]Finishing: Call back odm-devops".into(),
            ]),
        ));
    }
    if done {
        let id = logs.len() as i32 + 1;
        logs.push((
            id,
            lines(vec![
                "##[section]Starting: Finalize Job".into(),
                "Cleaning up task key".into(),
                format!(
                    "##[section]Finishing: Finalize Job ({})",
                    run.result.as_deref().unwrap_or("unknown")
                ),
            ]),
        ));
    }
    logs
}
