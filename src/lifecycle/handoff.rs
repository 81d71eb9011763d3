//! Handing a dispatch to this replica's engine from the write that makes it due (a callback
//! that starts the next task, an activity's start, an engine decision), instead of leaving it
//! for a claim to find.
//!
//! Why (issue 15's profile): on PostgreSQL a claim is its own transaction (find the due rows,
//! lock them, lease them, read their activities' keys), the lease is one more version of the
//! task's row, and on several replicas every write that left a dispatch due sent a NOTIFY that
//! woke the others to claim. Here the write that makes the dispatch due takes the lease itself,
//! in its own update of the task (`state::hand_off`: the lease and new attempt a claim would
//! give), and once it commits the engine gets the task over a channel and reads what carrying it
//! out needs. The durable record is the same as a claim's: a lease on the row. A replica that
//! dies before sending lets the lease expire, and the task is taken over like any claimed step
//! whose holder died (DESIGN §10: not sent again blindly).
//!
//! A write reserves room first (one of the engine's in-flight permits): without room, or
//! without an engine taking hand-offs (before it starts, after it stops), the write leaves the
//! dispatch to a claim as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::state;
use crate::domain::{Plan, Snapshot, TaskId};

/// The engine's side of hand-offs, shared with the writes of its replica (through `Waker`).
pub(super) struct Handoffs {
    /// Names the engine's claims and hand-offs: a lease says which one holds the task.
    replica: String,
    claims: AtomicU64,
    lease_ms: i64,
    /// One permit per step under way on this replica's engine.
    in_flight: Arc<Semaphore>,
    to_engine: mpsc::UnboundedSender<Handed>,
    /// Set when the engine stops: no more reservations.
    closed: AtomicBool,
}

/// What the engine receives: a task leased for it by a committed write.
pub struct Handed {
    pub task: TaskId,
    pub claim: String,
    pub permit: OwnedSemaphorePermit,
}

/// Room on the engine, reserved before a write that may hand it a dispatch; empty when there
/// was none (no engine taking hand-offs, no room, or not asked for).
#[derive(Default)]
pub struct Reservation(Option<Reserved>);

struct Reserved {
    lease: HandoffLease,
    permit: OwnedSemaphorePermit,
    to_engine: mpsc::UnboundedSender<Handed>,
}

/// What the write itself needs (it may run again: `Clone`, no permit).
#[derive(Debug, Clone)]
pub struct HandoffLease {
    claim: String,
    lease_ms: i64,
}

impl Handoffs {
    pub(super) fn new(
        replica: String,
        lease_ms: i64,
        in_flight: Arc<Semaphore>,
    ) -> (Handoffs, mpsc::UnboundedReceiver<Handed>) {
        let (to_engine, received) = mpsc::unbounded_channel();
        let handoffs = Handoffs {
            replica,
            claims: AtomicU64::new(0),
            lease_ms,
            in_flight,
            to_engine,
            closed: AtomicBool::new(false),
        };
        (handoffs, received)
    }

    /// A name of its own for each claim and hand-off of this replica.
    pub(super) fn next_claim(&self) -> String {
        let n = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.replica)
    }

    pub(super) fn reserve(&self) -> Reservation {
        if self.closed.load(Ordering::Acquire) {
            return Reservation::default();
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Reservation::default();
        };
        Reservation(Some(Reserved {
            lease: HandoffLease {
                claim: self.next_claim(),
                lease_ms: self.lease_ms,
            },
            permit,
            to_engine: self.to_engine.clone(),
        }))
    }

    /// The engine stops: writes leave their dispatches to claims from now on. A reservation
    /// taken before still arrives (the stopping engine waits for its permit).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl Reservation {
    /// What the write takes when there is room (`HandoffLease::take`); none without.
    pub fn lease(&self) -> Option<HandoffLease> {
        self.0.as_ref().map(|r| r.lease.clone())
    }

    /// Once the write is over: the task it handed goes to the engine; without one (nothing
    /// handed, or the write failed), the room is given back.
    pub fn deliver(self, handed: Option<TaskId>) {
        if let (Some(reserved), Some(task)) = (self.0, handed) {
            let handed = Handed {
                task,
                claim: reserved.lease.claim,
                permit: reserved.permit,
            };
            if reserved.to_engine.send(handed).is_err() {
                // Only once the engine has stopped for good, with its permits all back: not
                // while a reservation is out. The lease expires and the task is taken over.
                tracing::warn!(
                    task_id = task.get(),
                    "the engine stopped before a dispatch handed to it arrived"
                );
            }
        }
    }
}

impl HandoffLease {
    /// Lets `plan` (decided on `s` at `now`) hand its dispatch due now to the engine
    /// (`state::hand_off`); the task it handed.
    pub fn take(&self, plan: &mut Plan, s: &Snapshot, now: i64) -> Option<TaskId> {
        let lease_until = now.saturating_add(self.lease_ms);
        state::hand_off(plan, s, &self.claim, lease_until, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoffs(room: usize) -> (Handoffs, mpsc::UnboundedReceiver<Handed>, Arc<Semaphore>) {
        let in_flight = Arc::new(Semaphore::new(room));
        let (handoffs, received) = Handoffs::new("r".into(), 30_000, in_flight.clone());
        (handoffs, received, in_flight)
    }

    /// A hand-off takes one of the engine's permits until the step it carries is done: a full
    /// engine, or a stopping one, takes none and the dispatch is left to a claim.
    #[test]
    fn room_is_reserved_on_the_engine_and_given_back_when_nothing_is_handed() {
        let (handoffs, mut received, in_flight) = handoffs(1);
        let first = handoffs.reserve();
        assert!(first.lease().is_some(), "room for one");
        assert!(handoffs.reserve().lease().is_none(), "no room left");
        first.deliver(None);
        assert_eq!(in_flight.available_permits(), 1, "the room is given back");
        assert!(received.try_recv().is_err(), "nothing was handed");

        handoffs.close();
        assert!(
            handoffs.reserve().lease().is_none(),
            "a stopping engine takes no hand-offs"
        );
    }

    #[test]
    fn a_handed_task_reaches_the_engine_with_its_lease_and_its_room() {
        let (handoffs, mut received, in_flight) = handoffs(2);
        let (one, other) = (handoffs.reserve(), handoffs.reserve());
        assert_ne!(
            one.lease().unwrap().claim,
            other.lease().unwrap().claim,
            "a lease names one hand-off"
        );
        let claim = one.lease().unwrap().claim;
        one.deliver(Some(TaskId(7)));
        let handed = received.try_recv().expect("the task reached the engine");
        assert_eq!(
            (handed.task, handed.claim.as_str()),
            (TaskId(7), claim.as_str())
        );
        assert_eq!(
            in_flight.available_permits(),
            0,
            "held until the step is done"
        );
        drop(handed);
        drop(other);
        assert_eq!(in_flight.available_permits(), 2);
    }
}
