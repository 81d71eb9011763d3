//! What an ODM observer event asks of this service (DESIGN §9, inbound): a product version (or a
//! product) deleted in ODM takes its activities and tasks with it, as ODM's DevOps server does;
//! its lifecycle rows stay.

use super::error::CommandError;
use super::plumbing::Applied;
use super::service::{apply, snapshot, LifecycleService};
use super::state;
use crate::clock::now_ms;
use crate::db::{self, SnapshotOf};

/// What forgetting a product (version) did at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Activities that were PLANNED or PROCESSING, now ABORTED (their runs are cancelled by the
    /// engine's cancel steps).
    pub aborted: usize,
    /// Activities deleted at once; those whose runs are still being cancelled go once cancelled.
    pub deleted: usize,
}

impl LifecycleService {
    /// Aborts what runs of `product` (one `version`, or every version), then deletes its
    /// activities and tasks: at once those that owe the engine nothing, the others as soon as
    /// their runs are cancelled (the engine carries the deletion out).
    pub async fn forget_product(
        &self,
        product: String,
        version: Option<String>,
    ) -> Result<Forgotten, CommandError> {
        let (timings, listeners) = (self.timings, self.listeners.clone());
        let (forgotten, applied) = self
            .db
            .write(
                move |conn| -> Result<(Forgotten, Vec<Applied>), CommandError> {
                    let activities = db::activities_of(conn, &product, version.as_deref())?;
                    let Some(&(last, _)) = activities.last() else {
                        return Ok((Forgotten::default(), Vec::new()));
                    };
                    let now = now_ms();
                    let mut applied = Vec::new();
                    for (id, status) in activities {
                        if status.is_terminal() {
                            continue;
                        }
                        let snapshot = snapshot(conn, SnapshotOf::Activity(id), || {
                            CommandError::ActivityNotFound(id)
                        })?;
                        let plan = state::abort(&snapshot, &timings.at(now))?;
                        applied.push(apply(conn, &plan, id, &listeners)?);
                    }
                    db::insert_activity_deletion(conn, &product, version.as_deref(), last, now)?;
                    let deleted = db::carry_out_activity_deletions(conn)?;
                    let aborted = applied.len();
                    Ok((Forgotten { aborted, deleted }, applied))
                },
            )
            .await?;
        for a in applied {
            a.committed(&self.metrics, &self.waker);
        }
        self.waker.deletions_due();
        Ok(forgotten)
    }
}
