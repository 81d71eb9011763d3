//! What the simulator's records say about dispatches: how often each task's pipeline ran (more
//! than once is a double dispatch, an error), and which replica sent each run (its callbackRef
//! names the replica's `public_url`).

use std::collections::HashMap;

use super::latency::SimRun;

/// Tasks whose pipeline was run more than once, each counted once.
pub(crate) fn tasks_run_twice(runs: &[SimRun]) -> u64 {
    let mut per_task: HashMap<(&str, &str), u32> = HashMap::new();
    for run in runs {
        let parameter = |name: &str| run.template_parameters.get(name).map(String::as_str);
        if let (Some(activity), Some(task)) = (parameter("activity"), parameter("task")) {
            *per_task.entry((activity, task)).or_default() += 1;
        }
    }
    per_task.values().filter(|n| **n > 1).count() as u64
}

/// Runs sent by each server, in the order of `urls` (their base URLs).
pub(crate) fn runs_per_replica(runs: &[SimRun], urls: &[String]) -> Vec<u64> {
    let mut counts = vec![0; urls.len()];
    for run in runs {
        let Some(callback_ref) = run.template_parameters.get("callbackRef") else {
            continue;
        };
        if let Some(n) = urls
            .iter()
            .position(|url| callback_ref.starts_with(&format!("{url}/")))
        {
            counts[n] += 1;
        }
    }
    counts
}
