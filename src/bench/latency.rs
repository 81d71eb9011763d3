//! Callback answered → next run request received, from the simulator's records (one clock,
//! the simulator's): for each activity, the run request of task k+1 minus the moment the
//! answer to task k's callback came back.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// The parts of a `/_sim/runs` record the benchmark reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SimRun {
    #[serde(default)]
    pub completion_seq: Option<u64>,
    pub template_parameters: HashMap<String, String>,
    pub received_at_us: u64,
    pub callback: Option<SimCallback>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SimCallback {
    pub status: Option<u16>,
    pub answered_at_us: Option<u64>,
}

/// The gaps, in milliseconds, in no particular order.
pub(crate) fn gaps_ms(runs: &[SimRun]) -> Vec<f64> {
    let mut by_task: BTreeMap<(u32, u32), &SimRun> = BTreeMap::new();
    for run in runs {
        let number = |name: &str| run.template_parameters.get(name)?.parse::<u32>().ok();
        if let (Some(activity), Some(task)) = (number("activity"), number("task")) {
            by_task.insert((activity, task), run);
        }
    }
    by_task
        .iter()
        .filter_map(|(&(activity, task), run)| {
            let answered = run.callback.as_ref()?.answered_at_us?;
            let next = by_task.get(&(activity, task + 1))?;
            Some((next.received_at_us as f64 - answered as f64) / 1000.0)
        })
        .collect()
}

/// Runs whose callback was refused or never answered.
pub(crate) fn failed_callbacks(runs: &[SimRun]) -> u64 {
    runs.iter()
        .filter(|run| {
            !run.callback
                .as_ref()
                .and_then(|c| c.status)
                .is_some_and(|s| (200..300).contains(&s))
        })
        .count() as u64
}
