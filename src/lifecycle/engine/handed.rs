//! The engine's side of hand-offs (`lifecycle/handoff.rs`): the dispatches writes leased for
//! this engine, received once their writes committed, read and started.

use std::rc::Rc;

use super::{chain, Engine, EngineError, StepReport};
use crate::db;
use crate::domain::TaskId;
use crate::lifecycle::context;
use crate::lifecycle::handoff::Handed;

impl Engine {
    /// `first` and the dispatches handed over since, without waiting.
    pub(super) fn arrived(&self, first: Option<Handed>) -> Vec<Handed> {
        let mut handed: Vec<Handed> = first.into_iter().collect();
        if let Ok(mut received) = self.handed.try_lock() {
            handed.extend(std::iter::from_fn(|| received.try_recv().ok()));
        }
        handed
    }

    /// Starts the dispatches handed to this engine (`handoff.rs`): what each needs is read as a
    /// claim reads it, and their Contexts with it, in one go (on PostgreSQL one statement for
    /// all of them); one whose lease moved on meanwhile (an abort) is let go.
    pub(super) async fn start_handed(
        self: &Rc<Self>,
        handed: Vec<Handed>,
    ) -> Vec<tokio::task::JoinHandle<StepReport>> {
        // Those the write's batch read before its commit start at once, unless an abort since
        // may have released them (`handoff.rs`); the others are read now.
        let mut started = Vec::new();
        let mut unread = Vec::new();
        for mut h in handed {
            match h.read_is_current(&self.handoffs) {
                Some(read) => {
                    let (task, activity) = (read.step.task.id, read.step.task.activity_id);
                    self.db.remember_activities([(task, activity)]);
                    started.push(self.start(read.step, read.context, h.permit));
                }
                None => unread.push(h),
            }
        }
        let mut handed = unread;
        if handed.is_empty() {
            return started;
        }
        let leases: Vec<(TaskId, String)> =
            handed.iter().map(|h| (h.task, h.claim.clone())).collect();
        let read = self
            .while_database_fails(|| {
                let leases = leases.clone();
                self.db.read(move |conn| {
                    let (steps, rows) = db::handed_steps_with_contexts(conn, &leases)?;
                    let contexts = context::of_each(rows, steps.iter().map(|s| &s.activity));
                    Ok::<_, EngineError>((steps, contexts))
                })
            })
            .await;
        let (steps, mut contexts) = match read {
            Ok(read) => read,
            Err(e) => {
                // As for a claimed step whose database work failed: the leases run out and the
                // dispatches are taken over (not sent again blindly).
                tracing::error!(error = %chain(&e), handed = handed.len(), "reading dispatches handed to the engine failed");
                return started;
            }
        };
        let tasks = steps.iter().map(|c| (c.task.id, c.task.activity_id));
        self.db.remember_activities(tasks);
        started.extend(steps.into_iter().filter_map(|step| {
            let at = handed.iter().position(|h| h.task == step.task.id)?;
            let context = contexts.remove(&step.activity.id);
            Some(self.start(step, context, handed.swap_remove(at).permit))
        }));
        started
    }

    /// The next dispatch handed over.
    pub(super) async fn next_handed(&self) -> Handed {
        let handed = self.handed.lock().await.recv().await;
        match handed {
            Some(handed) => handed,
            // `self.handoffs` keeps a sender: the channel outlives the engine.
            None => std::future::pending().await,
        }
    }
}
