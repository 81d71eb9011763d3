//! One row of the promotion board: a version's stages as columns, each in one state, computed
//! from its activities and lifecycle rows (pure).

use crate::db::{BoardActivity, BoardLifecycle};
use crate::domain::{ActivityId, ActivityStatus};

/// Where a version stands in one stage, from its latest activity there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Its latest started activity PROCESSED (the lifecycle was promoted to it).
    Reached,
    /// An activity of the stage is PROCESSING.
    Running,
    /// Its latest started activity FAILED or was ABORTED.
    Failed,
    /// Only PLANNED activities, not started yet.
    Planned,
    /// No activity yet.
    NotYet,
}

impl CellState {
    pub fn name(self) -> &'static str {
        match self {
            CellState::Reached => "reached",
            CellState::Running => "running",
            CellState::Failed => "failed",
            CellState::Planned => "planned",
            CellState::NotYet => "notYet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCell {
    pub stage: String,
    pub state: CellState,
    /// False for a stage the descriptor no longer (or never, when unreadable) lists.
    pub in_descriptor: bool,
    /// The activity that decided `state`, and when it did (started for a running one, finished
    /// for a finished one, created for a planned one).
    pub activity: Option<(ActivityId, ActivityStatus)>,
    pub at: Option<i64>,
    /// When the version last entered this stage (its lifecycle row), whatever came after.
    pub reached_at: Option<i64>,
    /// The version's current lifecycle stage.
    pub current: bool,
    /// How many activities the stage has had.
    pub activities: usize,
}

/// The cells in `order` (the descriptor's), then the stages only activities or lifecycle rows
/// name, in order of first appearance; the current stage.
pub fn cells(
    order: &[String],
    activities: &[BoardActivity],
    lifecycles: &[BoardLifecycle],
) -> (Vec<StageCell>, Option<String>) {
    let current = lifecycles
        .iter()
        .rev()
        .find(|l| l.finished_at.is_none())
        .map(|l| l.stage.clone());
    let mut stages: Vec<(String, bool)> = order.iter().map(|s| (s.clone(), true)).collect();
    let others = activities
        .iter()
        .map(|a| &a.stage)
        .chain(lifecycles.iter().map(|l| &l.stage));
    for stage in others {
        if !stages.iter().any(|(s, _)| s == stage) {
            stages.push((stage.clone(), false));
        }
    }
    let cells = stages
        .into_iter()
        .map(|(stage, in_descriptor)| {
            let of_stage: Vec<&BoardActivity> =
                activities.iter().filter(|a| a.stage == stage).collect();
            let reached_at = lifecycles
                .iter()
                .rev()
                .find(|l| l.stage == stage)
                .map(|l| l.started_at);
            let (state, activity, at) = decide(&of_stage, lifecycles, &stage);
            StageCell {
                current: current.as_deref() == Some(stage.as_str()),
                stage,
                state,
                in_descriptor,
                activity,
                at,
                reached_at,
                activities: of_stage.len(),
            }
        })
        .collect();
    (cells, current)
}

type Decided = (CellState, Option<(ActivityId, ActivityStatus)>, Option<i64>);

/// `of_stage` is in id order: the last of a kind is the latest.
fn decide(of_stage: &[&BoardActivity], lifecycles: &[BoardLifecycle], stage: &str) -> Decided {
    let which = |a: &BoardActivity| Some((a.id, a.status));
    if let Some(a) = of_stage
        .iter()
        .rev()
        .find(|a| a.status == ActivityStatus::Processing)
    {
        return (CellState::Running, which(a), a.started_at);
    }
    let started = of_stage
        .iter()
        .rev()
        .find(|a| a.status != ActivityStatus::Planned);
    if let Some(a) = started {
        let state = match a.status {
            ActivityStatus::Processed => CellState::Reached,
            _ => CellState::Failed,
        };
        return (state, which(a), a.finished_at.or(a.started_at));
    }
    if let Some(a) = of_stage.last() {
        return (CellState::Planned, which(a), Some(a.created_at));
    }
    // A lifecycle row whose activity is gone (ODM's observer forgets a product's activities).
    match lifecycles.iter().rev().find(|l| l.stage == stage) {
        Some(l) => (CellState::Reached, None, Some(l.started_at)),
        None => (CellState::NotYet, None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActivityStatus::*;

    fn activity(id: i64, stage: &str, status: ActivityStatus) -> BoardActivity {
        BoardActivity {
            id: ActivityId(id),
            stage: stage.into(),
            status,
            created_at: id * 10,
            started_at: (status != Planned).then_some(id * 10 + 1),
            finished_at: matches!(status, Processed | Failed | Aborted).then_some(id * 10 + 2),
        }
    }

    fn promoted(id: i64, stage: &str, activity: i64, finished: Option<i64>) -> BoardLifecycle {
        BoardLifecycle {
            id,
            stage: stage.into(),
            activity_id: Some(ActivityId(activity)),
            started_at: activity * 10 + 2,
            finished_at: finished,
        }
    }

    fn states(cells: &[StageCell]) -> Vec<(&str, &str)> {
        cells
            .iter()
            .map(|c| (c.stage.as_str(), c.state.name()))
            .collect()
    }

    #[test]
    fn columns_follow_the_descriptor_then_stages_it_does_not_list() {
        let order = ["dev", "test", "prod"].map(String::from);
        let activities = [
            activity(1, "dev", Processed),
            activity(2, "test", Failed),
            activity(3, "legacy", Planned),
        ];
        let lifecycles = [promoted(1, "dev", 1, None)];
        let (cells, current) = cells(&order, &activities, &lifecycles);
        assert_eq!(
            states(&cells),
            [
                ("dev", "reached"),
                ("test", "failed"),
                ("prod", "notYet"),
                ("legacy", "planned")
            ]
        );
        assert_eq!(current.as_deref(), Some("dev"));
        assert!(cells[0].current && !cells[1].current);
        assert!(!cells[3].in_descriptor && cells[2].in_descriptor);
        assert_eq!(cells[0].at, Some(12));
        assert_eq!(cells[1].activity, Some((ActivityId(2), Failed)));
    }

    #[test]
    fn the_latest_started_activity_decides_and_running_wins() {
        let order = ["dev".to_owned()];
        // Reached, then a later run failed: failed now, and when it was reached is kept.
        let activities = [activity(1, "dev", Processed), activity(2, "dev", Aborted)];
        let lifecycles = [promoted(1, "dev", 1, None)];
        let (cells, _) = cells(&order, &activities, &lifecycles);
        assert_eq!(cells[0].state, CellState::Failed);
        assert_eq!(cells[0].reached_at, Some(12));
        assert_eq!(cells[0].activities, 2);
        // A newer PLANNED activity does not hide what the latest started one did.
        let more = [
            activity(1, "dev", Failed),
            activity(2, "dev", Processed),
            activity(3, "dev", Planned),
        ];
        let (cells, _) = super::cells(&order, &more, &[]);
        assert_eq!(cells[0].activity, Some((ActivityId(2), Processed)));
        let running = [activity(1, "dev", Processing), activity(2, "dev", Failed)];
        let (cells, _) = super::cells(&order, &running, &[]);
        assert_eq!(cells[0].state, CellState::Running);
        assert_eq!(cells[0].at, Some(11));
    }

    #[test]
    fn the_current_stage_is_the_open_lifecycle_row() {
        let order = ["dev", "test"].map(String::from);
        let activities = [
            activity(1, "dev", Processed),
            activity(2, "test", Processed),
        ];
        let lifecycles = [
            promoted(1, "dev", 1, Some(22)),
            promoted(2, "test", 2, None),
        ];
        let (cells, current) = cells(&order, &activities, &lifecycles);
        assert_eq!(current.as_deref(), Some("test"));
        assert_eq!((cells[0].current, cells[1].current), (false, true));
        assert_eq!(states(&cells), [("dev", "reached"), ("test", "reached")]);
    }
}
