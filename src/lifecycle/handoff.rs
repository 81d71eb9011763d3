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
//!
//! What the engine needs for a handed task is read as a claim reads it. The write offers that
//! read to its batch (`db::offer_handed_read`): on PostgreSQL the batch reads all its
//! hand-offs in one statement in its transaction, before its commit, and each arrives with its
//! task (`Handed::read`); otherwise (SQLite) the engine reads them, in one go for all tasks
//! handed since it last read (`engine/handed.rs`). Read that early, it would miss an abort
//! committed before the engine starts the step: a plan that aborts tasks on this replica (an
//! abort, a product forgotten; `Applied::committed` → `Handoffs::aborted`) makes the engine
//! read again what it was handed since the reservation, and a dispatch whose lease the abort
//! released is let go, not sent. (An abort on another replica in that instant is what a
//! claim meets too: the run is cancelled as in flight.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::{context, state};
use crate::db;
use crate::domain::{ClaimedStep, Plan, Snapshot, TaskId};
use crate::lifecycle::context::TaskContext;

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
    /// Aborts committed on this replica so far (`aborted`).
    aborts: AtomicU64,
}

/// What the engine receives: a task leased for it by a committed write.
pub struct Handed {
    pub task: TaskId,
    pub claim: String,
    pub permit: OwnedSemaphorePermit,
    /// What carrying it out needs, when the write's batch read it before its commit.
    pub read: Option<HandedRead>,
    /// `Handoffs::aborts` when room was reserved: a later abort makes `read` stale.
    pub aborts_before: u64,
}

impl Handed {
    /// What the write's batch read for it, unless an abort on this replica committed since its
    /// room was reserved (then the engine reads it again).
    pub(super) fn read_is_current(&mut self, handoffs: &Handoffs) -> Option<HandedRead> {
        let read = self.read.take()?;
        (handoffs.aborts.load(Ordering::Acquire) == self.aborts_before).then_some(read)
    }
}

/// A handed task read as a claim reads it, with its activity's Context.
pub struct HandedRead {
    pub step: ClaimedStep,
    pub context: Option<TaskContext>,
}

/// Where the write's batch leaves what it read for the task it handed (shared by the write's
/// copies of the lease and the reservation that delivers it).
#[derive(Clone, Default)]
struct ReadSlot(Arc<Mutex<Option<HandedRead>>>);

impl std::fmt::Debug for ReadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadSlot")
    }
}

impl ReadSlot {
    fn put(&self, read: HandedRead) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    fn take(&self) -> Option<HandedRead> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Room on the engine, reserved before a write that may hand it a dispatch; empty when there
/// was none (no engine taking hand-offs, no room, or not asked for).
#[derive(Default)]
pub struct Reservation(Option<Reserved>);

struct Reserved {
    aborts_before: u64,
    lease: HandoffLease,
    permit: OwnedSemaphorePermit,
    to_engine: mpsc::UnboundedSender<Handed>,
}

/// What the write itself needs (it may run again: `Clone`, no permit).
#[derive(Debug, Clone)]
pub struct HandoffLease {
    claim: String,
    lease_ms: i64,
    read: ReadSlot,
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
            aborts: AtomicU64::new(0),
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
            aborts_before: self.aborts.load(Ordering::Acquire),
            lease: HandoffLease {
                claim: self.next_claim(),
                lease_ms: self.lease_ms,
                read: ReadSlot::default(),
            },
            permit,
            to_engine: self.to_engine.clone(),
        }))
    }

    /// An abort committed on this replica: what writes read for their hand-offs before it may
    /// be stale (`Handed::read_is_current`).
    pub(super) fn aborted(&self) {
        self.aborts.fetch_add(1, Ordering::AcqRel);
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
            // Only what was read for this task: the slot is the lease's, and a write that ran
            // again may have handed another (or none) the last time.
            let read = reserved
                .lease
                .read
                .take()
                .filter(|r| r.step.task.id == task);
            let handed = Handed {
                task,
                claim: reserved.lease.claim,
                permit: reserved.permit,
                read,
                aborts_before: reserved.aborts_before,
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
    /// (`state::hand_off`); the task it handed, whose read is offered to the write's batch
    /// (`read_before_commit`).
    pub fn take(&self, plan: &mut Plan, s: &Snapshot, now: i64) -> Option<TaskId> {
        let task = self.take_unstored(plan, s, now)?;
        self.read_before_commit(task);
        Some(task)
    }

    /// As `take`, for rows not inserted yet (`s` of stand-in ids): the caller offers the read
    /// once it knows the id stored (`read_before_commit`).
    pub fn take_unstored(&self, plan: &mut Plan, s: &Snapshot, now: i64) -> Option<TaskId> {
        let lease_until = now.saturating_add(self.lease_ms);
        state::hand_off(plan, s, &self.claim, lease_until, now)
    }

    /// Offers the write's batch to read `task` as the engine would (`engine/handed.rs`), with
    /// the other hand-offs of the batch, after the writes and before the commit; read, it
    /// arrives with the task (`Handed::read`). Called on the writer thread, from within the
    /// write that handed `task`.
    pub fn read_before_commit(&self, task: TaskId) {
        // What an earlier try of this write read, in a transaction that did not commit, is not
        // to be delivered with this one.
        self.read.take();
        let slot = self.read.clone();
        db::offer_handed_read(task, self.claim.clone(), move |step, rows| {
            let context = rows.map(|rows| context::of_rows(rows, &step.activity));
            slot.put(HandedRead { step, context });
        });
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

    fn read_of(task: i64) -> HandedRead {
        use crate::domain::{ActivityId, ActivityKeys, ClaimedTask, Step};
        let task = ClaimedTask {
            id: TaskId(task),
            activity_id: ActivityId(1),
            position: 1,
            name: "t".into(),
            executor: None,
            template: None,
            planned_configurations: None,
            attempt: 1,
            step_attempts: 0,
            runs_failed: 0,
            due_at: None,
            started_at: None,
            deadline_at: None,
            run_ref: None,
            held: None,
        };
        let activity = ActivityKeys {
            id: ActivityId(1),
            data_product_id: "p".into(),
            data_product_version: "1".into(),
            stage: "dev".into(),
            sealed_secrets: None,
        };
        let step = crate::domain::ClaimedStep {
            claim: "r-1".into(),
            step: Step::Dispatch,
            abandoned: false,
            task,
            activity,
        };
        HandedRead {
            step,
            context: None,
        }
    }

    /// A read is delivered only from the try of the write that committed, and used only while
    /// no abort on this replica may have released the dispatch since the room was reserved.
    #[test]
    fn a_read_from_an_earlier_try_or_before_an_abort_is_not_used() {
        let (handoffs, mut received, _) = handoffs(3);
        let retried = handoffs.reserve();
        let lease = retried.lease().unwrap();
        // A first try read task 7 before a commit that failed; the try that committed read
        // nothing (on SQLite, or, as here, outside a batch: the offer is dropped).
        lease.read.put(read_of(7));
        lease.read_before_commit(TaskId(7));
        retried.deliver(Some(TaskId(7)));
        let handed = received.try_recv().unwrap();
        assert!(
            handed.read.is_none(),
            "a read of a rolled-back try was delivered"
        );

        let read_then_aborted = handoffs.reserve();
        read_then_aborted.lease().unwrap().read.put(read_of(8));
        read_then_aborted.deliver(Some(TaskId(8)));
        let mut handed = received.try_recv().unwrap();
        assert!(handed.read.is_some(), "the read arrives with the task");
        handoffs.aborted();
        assert!(
            handed.read_is_current(&handoffs).is_none(),
            "a read from before an abort was used"
        );

        let after_the_abort = handoffs.reserve();
        after_the_abort.lease().unwrap().read.put(read_of(9));
        after_the_abort.deliver(Some(TaskId(9)));
        let mut handed = received.try_recv().unwrap();
        assert!(handed.read_is_current(&handoffs).is_some());
    }
}
