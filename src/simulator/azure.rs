//! The three Azure DevOps routes the executor uses: Runs – Run Pipeline, Runs – Get, and
//! Builds – Update Build (cancel). Every request is authenticated and checked first.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};

use super::answer::{azure_error, respond, take_fault, Answer};
use super::config::FaultSpec;
use super::pipeline;
use super::state::{key, now_text, now_us, Inner, RunRecord, SimState};
use super::validate;
use crate::http_client::path_segment as encode_segment;

type ProjectPath = web::Path<(String, String, String)>;

pub(crate) async fn run_pipeline(
    req: HttpRequest,
    path: ProjectPath,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    state.lock().stats.run_requests += 1;
    let (organization, project, pipeline_id) = path.into_inner();
    let gate = guard(&state, &req);
    let answer = gate
        .admitted
        .and_then(|auth| {
            create_run(
                &state,
                &req,
                &organization,
                &project,
                &pipeline_id,
                &body,
                auth,
            )
        })
        .unwrap_or_else(|refusal| refusal);
    respond(&state, &req, gate.fault.as_ref(), answer).await
}

pub(crate) async fn get_run(
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, pipeline_id, run_id) = path.into_inner();
    let gate = guard(&state, &req);
    let answer = gate
        .admitted
        .and_then(|_| {
            let pipeline_id = validate::int32("pipelineId", &pipeline_id)?;
            let run_id = validate::int32("runId", &run_id)?;
            let inner = state.lock();
            let run = find_run(&inner, &organization, &project, run_id)
                .filter(|run| run.pipeline_id == pipeline_id)
                .ok_or_else(|| run_not_found(run_id))?;
            Ok(Answer::Json(StatusCode::OK, run_json(run, &base_url(&req))))
        })
        .unwrap_or_else(|refusal| refusal);
    respond(&state, &req, gate.fault.as_ref(), answer).await
}

pub(crate) async fn update_build(
    req: HttpRequest,
    path: ProjectPath,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, build_id) = path.into_inner();
    let gate = guard(&state, &req);
    let answer = gate
        .admitted
        .and_then(|_| {
            let build_id = validate::int32("buildId", &build_id)?;
            let status = validate::build_update(&validate::json_body(&body, "build")?)?;
            if status != "cancelling" {
                return Err(validate_only_cancel(&status));
            }
            let mut inner = state.lock();
            if find_run(&inner, &organization, &project, build_id).is_none() {
                return Err(build_not_found(build_id));
            }
            // Cancelled before its last step: it never calls back.
            let cancelled = inner.complete(build_id, "canceled");
            let run = &inner.runs[&build_id];
            let answer = build_json(run, &base_url(&req), cancelled);
            drop(inner);
            if cancelled {
                super::hooks::announce_later(Arc::clone(&state), build_id);
            }
            Ok(Answer::Json(StatusCode::OK, answer))
        })
        .unwrap_or_else(|refusal| refusal);
    respond(&state, &req, gate.fault.as_ref(), answer).await
}

fn create_run(
    state: &web::Data<SimState>,
    req: &HttpRequest,
    organization: &str,
    project: &str,
    pipeline_id: &str,
    body: &[u8],
    auth: &'static str,
) -> Result<Answer, Answer> {
    let received_at_us = now_us();
    let pipeline_id = validate::int32("pipelineId", pipeline_id)?;
    let request_body = validate::json_body(body, "runParameters")?;
    let mut inner = state.lock();
    let pipeline = inner
        .pipelines
        .get(&key(organization, project, pipeline_id))
        .cloned()
        .ok_or_else(|| {
            azure_error(
                StatusCode::NOT_FOUND,
                format!(
                    "Pipeline with id {pipeline_id} does not exist in project '{project}' of \
                     organization '{organization}' (declare it in the simulator)."
                ),
                "PipelineNotFoundException",
            )
        })?;
    let run_request = validate::run_request(&request_body, &pipeline)?;
    if run_request.preview {
        return Ok(super::preview::answer(
            &mut inner,
            &pipeline,
            &run_request,
            request_body,
            auth,
        ));
    }
    let id = inner.next_run_id;
    inner.next_run_id += 1;
    let run = RunRecord {
        id,
        organization: pipeline.organization.clone(),
        project: pipeline.project.clone(),
        pipeline_id,
        pipeline_name: pipeline
            .name
            .clone()
            .unwrap_or_else(|| format!("pipeline-{pipeline_id}")),
        state: "inProgress".into(),
        result: None,
        request_body,
        template_parameters: run_request.template_parameters,
        ref_name: run_request.ref_name,
        authenticated_with: auth.into(),
        created_date: now_text(),
        received_at_us,
        completion_seq: None,
        finished_date: None,
        callback: None,
        behaviour: pipeline.behaviour.clone(),
    };
    let answer = run_json(&run, &base_url(req));
    inner.runs.insert(id, run);
    inner.stats.runs_created += 1;
    let default_delay = inner.config.default_delay_ms;
    drop(inner);
    pipeline::schedule(
        Arc::clone(state),
        id,
        pipeline.behaviour.clone(),
        default_delay,
    );
    Ok(Answer::Json(StatusCode::OK, answer))
}

/// The fault this request consumed, and how the request fared at the door: how it
/// authenticated, or the refusal.
pub(super) struct Gate {
    pub(super) fault: Option<FaultSpec>,
    pub(super) admitted: Result<&'static str, Answer>,
}

/// Fault, then credentials, then api-version, as Azure checks them.
pub(super) fn guard(state: &SimState, req: &HttpRequest) -> Gate {
    let (fault, refusal) = take_fault(state, req);
    let admitted = match refusal {
        Some(answer) => Err(answer),
        None => authenticate(state, req).and_then(|auth| {
            validate::api_version(req)?;
            Ok(auth)
        }),
    };
    Gate { fault, admitted }
}

fn authenticate(state: &SimState, req: &HttpRequest) -> Result<&'static str, Answer> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let inner = state.lock();
    let accepted = if let Some(token) = header.strip_prefix("Bearer ") {
        match inner.tokens.get(token.trim()) {
            Some(expires) if *expires > std::time::Instant::now() => Ok("bearer"),
            Some(_) => Err("the access token has expired"),
            None => Err("the access token was not issued by this simulator"),
        }
    } else if let Some(encoded) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        // Any user name; the PAT is the password.
        let pat = decoded.split_once(':').map(|(_, pat)| pat).unwrap_or("");
        if !pat.is_empty() && inner.config.pats.iter().any(|p| p == pat) {
            Ok("pat")
        } else {
            Err("the personal access token is not accepted")
        }
    } else {
        Err("no credentials were given")
    };
    accepted.map_err(|why| {
        let suppress = req
            .headers()
            .get("x-tfs-fedauthredirect")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("suppress"));
        if suppress {
            azure_error(
                StatusCode::UNAUTHORIZED,
                format!("TF400813: The user '' is not authorized to access this resource ({why})."),
                "UnauthorizedRequestException",
            )
        } else {
            Answer::SignIn
        }
    })
}

pub(super) fn find_run<'a>(
    inner: &'a Inner,
    organization: &str,
    project: &str,
    id: i32,
) -> Option<&'a RunRecord> {
    inner.runs.get(&id).filter(|run| {
        run.organization.eq_ignore_ascii_case(organization)
            && run.project.eq_ignore_ascii_case(project)
    })
}

pub(super) fn run_not_found(id: i32) -> Answer {
    azure_error(
        StatusCode::NOT_FOUND,
        format!("Run with ID {id} does not exist or you do not have permission to view it."),
        "RunNotFoundException",
    )
}

fn build_not_found(id: i32) -> Answer {
    azure_error(
        StatusCode::NOT_FOUND,
        format!(
            "TF215027: Build with ID {id} does not exist or you do not have permission to view it."
        ),
        "BuildNotFoundException",
    )
}

fn validate_only_cancel(status: &str) -> Answer {
    azure_error(
        StatusCode::BAD_REQUEST,
        format!("The simulator only cancels builds (status 'cancelling'), not status '{status}'."),
        "ArgumentException",
    )
}

pub(super) fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

pub(super) fn project_url(run: &RunRecord, base: &str) -> String {
    format!(
        "{base}/{}/{}",
        encode_segment(&run.organization),
        encode_segment(&run.project)
    )
}

/// The Run shape of the 7.1 description, as Azure fills it.
pub(super) fn run_json(run: &RunRecord, base: &str) -> Value {
    let project = project_url(run, base);
    let self_url = format!(
        "{project}/_apis/pipelines/{}/runs/{}",
        run.pipeline_id, run.id
    );
    let pipeline_url = format!("{project}/_apis/pipelines/{}?revision=1", run.pipeline_id);
    let mut json = json!({
        "_links": {
            "self": {"href": self_url},
            "web": {"href": format!("{project}/_build/results?buildId={}", run.id)},
            "pipeline.web": {"href": format!("{project}/_build/definition?definitionId={}", run.pipeline_id)},
            "pipeline": {"href": pipeline_url},
        },
        "templateParameters": run.template_parameters,
        "pipeline": {"url": pipeline_url, "id": run.pipeline_id, "revision": 1,
                     "name": run.pipeline_name, "folder": "\\"},
        "state": run.state,
        "createdDate": run.created_date,
        "url": self_url,
        "id": run.id,
        "name": format!("sim.{}", run.id),
    });
    if let Some(ref_name) = &run.ref_name {
        json["resources"] = json!({"repositories": {"self": {
            "repository": {"type": "azureReposGit"}, "refName": ref_name}}});
    }
    if let Some(result) = &run.result {
        json["result"] = json!(result);
    }
    if let Some(finished) = &run.finished_date {
        json["finishedDate"] = json!(finished);
    }
    json
}

/// The Build shape (the parts a client reads back after an update).
fn build_json(run: &RunRecord, base: &str, cancelled_now: bool) -> Value {
    let project = project_url(run, base);
    let status = if cancelled_now {
        "cancelling"
    } else {
        "completed"
    };
    json!({
        "_links": {"web": {"href": format!("{project}/_build/results?buildId={}", run.id)}},
        "id": run.id,
        "buildNumber": format!("sim.{}", run.id),
        "status": status,
        "result": run.result,
        "definition": {"id": run.pipeline_id, "name": run.pipeline_name},
        "project": {"name": run.project},
        "url": format!("{project}/_apis/build/Builds/{}", run.id),
    })
}
