use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::db::{StepCounts, WorkCounts};
use crate::domain::{ActivityStatus, TaskStatus};

fn lines(page: &str) -> Vec<&str> {
    page.lines().collect()
}

#[test]
fn the_page_shows_stored_work_with_every_status_and_step() {
    let mut work = WorkCounts::default();
    work.activities[ActivityStatus::Processed as usize] = 3;
    work.tasks[TaskStatus::Planned as usize] = 2;
    work.steps[Step::Dispatch as usize] = StepCounts {
        scheduled: 5,
        overdue: 2,
        oldest_due_at: Some(10_000),
    };
    let page = Metrics::default().render(Some(&work), 12_500);
    let lines = lines(&page);
    for expected in [
        "odm_devops_database_up 1",
        "odm_devops_activities{status=\"PROCESSED\"} 3",
        "odm_devops_activities{status=\"ABORTED\"} 0",
        "odm_devops_tasks{status=\"PLANNED\"} 2",
        "odm_devops_engine_steps_scheduled{step=\"dispatch\"} 5",
        "odm_devops_engine_steps_overdue{step=\"dispatch\"} 2",
        "odm_devops_engine_oldest_overdue_step_age_seconds{step=\"dispatch\"} 2.5",
        "odm_devops_engine_oldest_overdue_step_age_seconds{step=\"cancel\"} 0",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from\n{page}");
    }
}

#[test]
fn without_the_database_the_page_says_so_and_keeps_the_process_metrics() {
    let metrics = Metrics::default();
    metrics.callback(CallbackAnswer::Accepted);
    let page = metrics.render(None, 0);
    assert!(page.contains("\nodm_devops_database_up 0\n"), "{page}");
    assert!(!page.contains("odm_devops_activities{"), "{page}");
    assert!(page.contains("odm_devops_callbacks_total{answer=\"accepted\"} 1\n"));
}

#[test]
fn requests_are_counted_by_route_pattern_and_odd_methods_are_folded() {
    let metrics = Metrics::default();
    let route = || Some("/api/v1/pp/devops/tasks/{id}".to_owned());
    metrics.http_request("GET", route(), 200, Duration::from_millis(2));
    metrics.http_request("GET", route(), 200, Duration::from_millis(3));
    metrics.http_request("GET", route(), 404, Duration::from_millis(1));
    metrics.http_request("BREW", None, 404, Duration::from_millis(1));
    let page = metrics.render(None, 0);
    let lines = lines(&page);
    for expected in [
        r#"odm_devops_http_requests_total{method="GET",route="/api/v1/pp/devops/tasks/{id}",status="200"} 2"#,
        r#"odm_devops_http_requests_total{method="GET",route="/api/v1/pp/devops/tasks/{id}",status="404"} 1"#,
        r#"odm_devops_http_requests_total{method="OTHER",route="unmatched",status="404"} 1"#,
        r#"odm_devops_http_request_duration_seconds_bucket{method="GET",route="/api/v1/pp/devops/tasks/{id}",le="0.0025"} 2"#,
        r#"odm_devops_http_request_duration_seconds_bucket{method="GET",route="/api/v1/pp/devops/tasks/{id}",le="+Inf"} 3"#,
        r#"odm_devops_http_request_duration_seconds_count{method="GET",route="/api/v1/pp/devops/tasks/{id}"} 3"#,
        r#"odm_devops_http_request_duration_seconds_sum{method="GET",route="/api/v1/pp/devops/tasks/{id}"} 0.006"#,
    ] {
        assert!(lines.contains(&expected), "{expected} missing from\n{page}");
    }
}

#[test]
fn engine_tasks_and_executors_are_counted() {
    let metrics = Metrics::default();
    metrics.step_run(Step::Dispatch, StepResult::Done, Duration::from_millis(4));
    metrics.step_run(
        Step::Dispatch,
        StepResult::Rescheduled,
        Duration::from_secs(2),
    );
    let mut outcomes = TaskOutcomes::default();
    outcomes.add(TaskOutcome::Processed);
    outcomes.add(TaskOutcome::Aborted);
    outcomes.add(TaskOutcome::Aborted);
    metrics.tasks_ended(outcomes);
    metrics.next_dispatch(Duration::from_millis(15));
    let azure = metrics.executor("azure-devops");
    azure.answered(200);
    azure.answered(429);
    azure.no_answer();
    azure.retry();
    azure.waited(WaitReason::RetryAfter, Duration::from_millis(1500));
    metrics.executor("azure-devops").answered(201);
    let page = metrics.render(None, 0);
    let lines = lines(&page);
    for expected in [
        r#"odm_devops_engine_steps_run_total{step="dispatch",result="done"} 1"#,
        r#"odm_devops_engine_steps_run_total{step="dispatch",result="rescheduled"} 1"#,
        r#"odm_devops_engine_steps_run_total{step="cancel",result="error"} 0"#,
        r#"odm_devops_engine_step_duration_seconds_count{step="dispatch"} 2"#,
        r#"odm_devops_task_outcomes_total{outcome="processed"} 1"#,
        r#"odm_devops_task_outcomes_total{outcome="aborted"} 2"#,
        r#"odm_devops_task_outcomes_total{outcome="retried"} 0"#,
        r#"odm_devops_next_dispatch_delay_seconds_bucket{le="0.01"} 0"#,
        r#"odm_devops_next_dispatch_delay_seconds_bucket{le="0.02"} 1"#,
        r#"odm_devops_executor_requests_total{executor="azure-devops",class="2xx"} 2"#,
        r#"odm_devops_executor_requests_total{executor="azure-devops",class="4xx"} 1"#,
        r#"odm_devops_executor_requests_total{executor="azure-devops",class="error"} 1"#,
        r#"odm_devops_executor_retries_total{executor="azure-devops"} 1"#,
        r#"odm_devops_executor_throttled_total{executor="azure-devops"} 1"#,
        r#"odm_devops_executor_wait_seconds_total{executor="azure-devops",reason="retry_after"} 1.5"#,
    ] {
        assert!(lines.contains(&expected), "{expected} missing from\n{page}");
    }
}

/// Every sample belongs to a metric declared once before it, with help and type.
#[test]
fn the_page_is_well_formed() {
    let metrics = Metrics::default();
    metrics.http_request(
        "GET",
        Some("/metrics".into()),
        200,
        Duration::from_millis(1),
    );
    metrics.executor("odm").answered(200);
    let page = metrics.render(Some(&WorkCounts::default()), 0);
    assert!(page.ends_with('\n'));
    let mut declared = HashSet::new();
    let mut current: Option<(String, String)> = None;
    for line in page.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap();
            assert!(declared.insert(name.to_owned()), "{name} declared twice");
        } else if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').unwrap();
            assert!(declared.contains(name), "TYPE before HELP: {line}");
            current = Some((name.to_owned(), kind.to_owned()));
        } else {
            let (name, kind) = current.as_ref().expect("a sample after a TYPE");
            let sample = line.split(['{', ' ']).next().unwrap();
            let allowed = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample == format!("{name}{suffix}")),
                _ => sample == name,
            };
            assert!(allowed, "{line} under {name} ({kind})");
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "value of {line}"
            );
        }
    }
}
