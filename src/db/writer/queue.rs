//! The writes waiting for the writer threads, and which thread takes which: one thread on
//! SQLite (a single writer anyway), `POSTGRES_WRITE_THREADS` on PostgreSQL.
//!
//! On PostgreSQL the CPU both sides share is the limit on one host, and a commit (a round trip,
//! a WAL flush) costs it as much as several statements; the fewer and larger the batches, the
//! more tasks a second. Threads that each took a fixed share of the writes (as before) each
//! batched that share only; one thread alone, though, holds every write up behind one that
//! waits (for a lock another replica's batch holds until its commit, or for a slow round
//! trip). So (measured against fixed shares: commits per task 0.83 → 0.56, PostgreSQL 1.16 ×
//! on one replica and 1.15 × on two; README, *PostgreSQL at scale*):
//!
//! * The first thread takes what waits whenever it is idle; the others sleep.
//! * Thread k starts a batch only once every thread before it is held up: on one step of its
//!   batch (a write, or the commit) for `JOIN_AFTER` (a lock, a slow PostgreSQL), or in its
//!   batch for `BATCH_JOIN_AFTER`. At ordinary speed, full load included, the others stay
//!   asleep. (Joining once a batch had run `JOIN_AFTER`, as before, brought the second thread
//!   in at full load on two cores, where a batch of quick writes passes 10 ms: smaller batches,
//!   commits per task 0.64 → 0.50 on one replica and 0.87 → 0.76 on two without it, two
//!   replicas 1.10 × the throughput, one replica 0.97 ×, within the noise; README.)
//! * A write of an activity with a write in a batch under way waits for that batch (it would
//!   wait for its locks anyway): two threads never hold one activity's locks, so they never
//!   wait for each other over one, a waiting write holds up its own activity's writes only,
//!   and an activity's writes run in the order they were queued. Writes of no activity
//!   (creations lock only new rows, claims skip locked rows) go with any thread.
//! * A sleeping thread is woken only when what waits changes what it would do: its turn to
//!   take has come, or comes sooner than it sleeps until (`Queue::to_wake`). Waking the next
//!   thread at every write, as before, made it wake and sleep again until `JOIN_AFTER` once per
//!   write while the first ran its batch: 19,000 context switches in 5 s at 1,600 tasks/s.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::QueuedWrite;

/// How long every earlier thread must have been on one step of its batch (a write, or the
/// commit) before the next one starts a batch: far longer than a statement takes on one host,
/// short enough that writes behind a held-up thread are not held long.
pub(super) const JOIN_AFTER: Duration = Duration::from_millis(10);

/// How long every earlier thread must have been in its batch, whatever its steps take, before
/// the next one starts one: a batch of many quick writes is not held up, but the writes that
/// arrive meanwhile wait for it; longer than a full batch takes at full load on two cores.
pub(super) const BATCH_JOIN_AFTER: Duration = Duration::from_millis(50);

/// A write waiting for a thread, with the activity it locks (`None`: no existing activity).
pub(super) struct Waiting {
    pub activity: Option<i64>,
    pub write: Box<dyn QueuedWrite>,
}

/// What the threads share, under one lock.
pub(super) struct Queue {
    waiting: VecDeque<Waiting>,
    /// Activities with a write in a batch under way, and the thread running that batch.
    under_way: HashMap<i64, usize>,
    /// Each thread's batch under way (`None`: idle).
    busy: Vec<Option<Busy>>,
    /// How each idle thread sleeps (`Asleep::No`: awake, it looks at the queue before it
    /// sleeps again), so that a write arriving wakes a thread only when that changes what the
    /// thread would do: a thread waiting for `JOIN_AFTER` is not woken by every write.
    asleep: Vec<Asleep>,
    /// No more writes will come (the last `Writer` was dropped): the threads stop once the
    /// queue is empty.
    pub closed: bool,
}

/// A thread's batch under way.
#[derive(Debug, Clone, Copy)]
struct Busy {
    since: Instant,
    /// When its current step (a write, or the commit) began.
    step_since: Instant,
}

impl Busy {
    /// When it counts as held up (module doc): one step for `JOIN_AFTER`, or the batch for
    /// `BATCH_JOIN_AFTER`.
    fn held_up_at(&self) -> Instant {
        (self.step_since + JOIN_AFTER).min(self.since + BATCH_JOIN_AFTER)
    }
}

/// How a thread waits on its wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asleep {
    No,
    /// Until woken.
    Forever,
    /// Until woken or this instant.
    Until(Instant),
}

/// What an idle thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// Take a batch (`Queue::take`).
    Take,
    /// Nothing for this thread now: sleep until woken.
    Sleep,
    /// Writes wait, and an earlier thread will have been busy long enough then.
    SleepUntil(Instant),
    Stop,
}

impl Queue {
    pub fn new(threads: usize) -> Queue {
        Queue {
            waiting: VecDeque::new(),
            under_way: HashMap::new(),
            busy: vec![None; threads.max(1)],
            asleep: vec![Asleep::No; threads.max(1)],
            closed: false,
        }
    }

    pub fn push(&mut self, write: Waiting) {
        self.waiting.push_back(write);
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The first idle thread: the one whose turn it is.
    fn first_idle(&self) -> Option<usize> {
        self.busy.iter().position(Option::is_none)
    }

    /// `thread` goes to sleep as `how` (it releases the lock to do so).
    pub fn sleeps(&mut self, thread: usize, how: Asleep) {
        self.asleep[thread] = how;
    }

    /// `thread` woke (a wake-up, its deadline, or spuriously) and looks at the queue again.
    pub fn woke(&mut self, thread: usize) {
        self.asleep[thread] = Asleep::No;
    }

    /// The thread to wake now, if any: the first idle one, when asleep while its turn is to
    /// take now, or at an earlier instant than it sleeps until. (A thread awake looks at the
    /// queue before it sleeps; the queue changes only under the lock it holds meanwhile.)
    pub fn to_wake(&self, now: Instant) -> Option<usize> {
        let thread = self.first_idle()?;
        let woken = match (self.turn(thread, now), self.asleep[thread]) {
            (_, Asleep::No) => false,
            (Turn::Take, _) => true,
            (Turn::SleepUntil(at), Asleep::Until(until)) => at < until,
            (Turn::SleepUntil(_), Asleep::Forever) => true,
            (Turn::Sleep | Turn::Stop, _) => false,
        };
        woken.then_some(thread)
    }

    /// Whether `thread` may run `write` now: no other thread's batch holds its activity.
    fn free_for(&self, thread: usize, write: &Waiting) -> bool {
        write
            .activity
            .and_then(|activity| self.under_way.get(&activity))
            .is_none_or(|&holder| holder == thread)
    }

    /// What idle `thread` does next (see the module's rules).
    pub fn turn(&self, thread: usize, now: Instant) -> Turn {
        if !self.waiting.iter().any(|w| self.free_for(thread, w)) {
            return if self.closed && self.waiting.is_empty() {
                Turn::Stop
            } else {
                Turn::Sleep
            };
        }
        if self.closed {
            return Turn::Take;
        }
        let mut starts_at = now;
        for busy in &self.busy[..thread] {
            match busy {
                // An earlier thread is idle: what this one could take is that one's.
                None => return Turn::Sleep,
                Some(busy) => starts_at = starts_at.max(busy.held_up_at()),
            }
        }
        if starts_at <= now {
            Turn::Take
        } else {
            Turn::SleepUntil(starts_at)
        }
    }

    /// Takes up to `most` of the writes `thread` may run, in the order they were queued, and
    /// marks their activities as under way on it.
    pub fn take(&mut self, thread: usize, most: usize, now: Instant) -> Vec<Box<dyn QueuedWrite>> {
        let mut batch = Vec::new();
        let mut left = VecDeque::with_capacity(self.waiting.len());
        for write in std::mem::take(&mut self.waiting) {
            if batch.len() < most && self.free_for(thread, &write) {
                if let Some(activity) = write.activity {
                    self.under_way.insert(activity, thread);
                }
                batch.push(write.write);
            } else {
                left.push_back(write);
            }
        }
        self.waiting = left;
        self.busy[thread] = Some(Busy {
            since: now,
            step_since: now,
        });
        batch
    }

    /// `thread` starts the next step of its batch (a write, or the commit).
    pub fn step(&mut self, thread: usize, now: Instant) {
        if let Some(busy) = &mut self.busy[thread] {
            busy.step_since = now;
        }
    }

    /// `thread`'s batch is over: its activities are free, and it is idle.
    pub fn done(&mut self, thread: usize) {
        self.under_way.retain(|_, holder| *holder != thread);
        self.busy[thread] = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::writer::Ran;
    use crate::db::{DbConnection, DbError};

    /// A write that records nothing: the queue only looks at its activity.
    struct Nothing;

    impl QueuedWrite for Nothing {
        fn run(&mut self, _conn: &mut DbConnection) -> Ran {
            Ran::Succeeded
        }
        fn rerunnable(&self) -> bool {
            false
        }
        fn finish(self: Box<Self>, _commit: Result<(), &DbError>) {}
    }

    fn push(queue: &mut Queue, activity: Option<i64>) {
        queue.push(Waiting {
            activity,
            write: Box::new(Nothing),
        });
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_thread_takes_and_the_next_joins_only_when_the_earlier_are_held_up() {
        let t0 = Instant::now();
        let mut queue = Queue::new(3);
        assert_eq!(queue.turn(0, t0), Turn::Sleep, "nothing waits");
        push(&mut queue, None);
        assert_eq!(queue.first_idle(), Some(0));
        assert_eq!(queue.turn(0, t0), Turn::Take);
        assert_eq!(queue.turn(1, t0), Turn::Sleep, "the first thread is idle");
        assert_eq!(queue.take(0, 256, t0).len(), 1);

        push(&mut queue, None);
        push(&mut queue, Some(7));
        assert_eq!(queue.first_idle(), Some(1));
        assert_eq!(queue.turn(1, t0 + ms(4)), Turn::SleepUntil(t0 + JOIN_AFTER));
        assert_eq!(queue.turn(1, t0 + JOIN_AFTER), Turn::Take);
        assert_eq!(
            queue.turn(2, t0 + JOIN_AFTER),
            Turn::Sleep,
            "the second thread is idle"
        );
        let second_took = t0 + JOIN_AFTER + ms(1);
        assert_eq!(queue.take(1, 1, second_took).len(), 1, "at most one");
        assert_eq!(
            queue.turn(2, second_took),
            Turn::SleepUntil(second_took + JOIN_AFTER),
            "every earlier thread must be held up"
        );
        queue.done(0);
        assert_eq!(queue.first_idle(), Some(0));
        assert_eq!(queue.turn(2, second_took + JOIN_AFTER), Turn::Sleep);
        assert_eq!(queue.turn(0, second_took), Turn::Take);
    }

    /// A batch of many quick writes is not held up: the next thread joins when one step (a
    /// write, the commit) has lasted `JOIN_AFTER`, or the whole batch `BATCH_JOIN_AFTER`.
    #[test]
    fn the_next_thread_joins_when_one_step_is_held_up_not_when_a_batch_is_long() {
        let t0 = Instant::now();
        let mut queue = Queue::new(2);
        push(&mut queue, None);
        queue.take(0, 256, t0);
        push(&mut queue, None);
        // Quick writes, one after another: each moves the instant the second may join.
        queue.step(0, t0 + ms(8));
        assert_eq!(queue.turn(1, t0 + ms(12)), Turn::SleepUntil(t0 + ms(18)));
        queue.step(0, t0 + ms(16));
        assert_eq!(queue.turn(1, t0 + ms(18)), Turn::SleepUntil(t0 + ms(26)));
        // One write held (a lock another replica holds): the second joins.
        assert_eq!(queue.turn(1, t0 + ms(26)), Turn::Take);
        // A batch that has gone on for BATCH_JOIN_AFTER brings it in however quick its steps.
        queue.step(0, t0 + BATCH_JOIN_AFTER - ms(1));
        assert_eq!(queue.turn(1, t0 + BATCH_JOIN_AFTER), Turn::Take);
    }

    /// Profiled (issue 15): the second thread was woken by every write that arrived while the
    /// first ran its batch, to go back to sleep until `JOIN_AFTER` each time (19,000 needless
    /// context switches in 5 s at 1,600 tasks/s).
    #[test]
    fn a_thread_is_woken_only_when_its_turn_comes_sooner_than_it_sleeps() {
        let t0 = Instant::now();
        let mut queue = Queue::new(2);
        queue.sleeps(0, Asleep::Forever);
        queue.sleeps(1, Asleep::Forever);
        assert_eq!(queue.to_wake(t0), None, "nothing waits");
        push(&mut queue, None);
        assert_eq!(queue.to_wake(t0), Some(0), "the first thread takes it");
        queue.woke(0);
        assert_eq!(queue.to_wake(t0), None, "awake, it looks before it sleeps");
        queue.take(0, 256, t0);

        push(&mut queue, None);
        assert_eq!(
            queue.to_wake(t0 + ms(1)),
            Some(1),
            "asleep for ever, the second thread must learn when it may join"
        );
        queue.woke(1);
        queue.sleeps(1, Asleep::Until(t0 + JOIN_AFTER));
        push(&mut queue, None);
        assert_eq!(queue.to_wake(t0 + ms(2)), None, "it wakes then anyway");
        assert_eq!(queue.to_wake(t0 + JOIN_AFTER), Some(1), "now it may join");

        // The first thread's batch ends before the second joined: the first takes what waits.
        queue.done(0);
        queue.sleeps(0, Asleep::Forever);
        assert_eq!(queue.to_wake(t0 + ms(3)), Some(0));
    }

    #[test]
    fn a_write_of_an_activity_under_way_waits_for_its_thread() {
        let t0 = Instant::now();
        let mut queue = Queue::new(2);
        push(&mut queue, Some(1));
        assert_eq!(queue.take(0, 256, t0).len(), 1);
        push(&mut queue, Some(1));
        push(&mut queue, Some(2));
        push(&mut queue, Some(1));
        let later = t0 + JOIN_AFTER;
        assert_eq!(queue.turn(1, later), Turn::Take);
        assert_eq!(queue.take(1, 256, later).len(), 1, "only activity 2's");
        queue.done(1);
        assert_eq!(
            queue.turn(1, later),
            Turn::Sleep,
            "activity 1's writes are the first thread's"
        );
        // The first thread may take them while its batch is under way (its next batch).
        queue.done(0);
        assert_eq!(queue.turn(0, later), Turn::Take);
        assert_eq!(queue.take(0, 256, later).len(), 2, "in the order queued");
        assert!(queue.is_empty());
    }

    #[test]
    fn a_closed_queue_is_emptied_at_once_then_its_threads_stop() {
        let t0 = Instant::now();
        let mut queue = Queue::new(2);
        push(&mut queue, Some(1));
        queue.take(0, 256, t0);
        push(&mut queue, Some(2));
        queue.closed = true;
        assert_eq!(
            queue.turn(1, t0),
            Turn::Take,
            "no wait for the first thread"
        );
        queue.take(1, 256, t0);
        queue.done(1);
        assert_eq!(queue.turn(1, t0), Turn::Stop);
    }
}
