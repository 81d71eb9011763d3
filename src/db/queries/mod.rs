//! Every query the service runs. Functions take a connection so callers compose them inside
//! one `Db::write` transaction.

mod activities;
mod behind;
mod board;
mod combined;
mod contexts_pg;
mod deletions;
mod engine;
mod executor_runs;
mod handed_pg;
mod insert_pg;
mod lifecycles;
mod on_claim;
mod outbox;
mod plans;
mod prepared;
mod read_ahead;
mod registry;
mod runs;
mod tasks;
mod transport;
mod work;

pub use activities::*;
#[cfg(test)]
pub(crate) use behind::BEHIND;
pub(crate) use behind::{apply_behind, end_of_write};
pub use board::*;
pub use deletions::*;
pub use engine::*;
pub use executor_runs::*;
pub use lifecycles::*;
pub use on_claim::*;
pub use outbox::*;
pub use plans::*;
pub(crate) use read_ahead::read_snapshots_ahead;
#[cfg(test)]
pub(crate) use read_ahead::READ_AHEAD;
pub use registry::*;
pub use runs::*;
pub use tasks::*;
pub use transport::*;
pub use work::*;

type Conn = super::DbConnection;

/// What a batch took of a path (`on_claim.rs`, `read_ahead.rs`, `behind.rs`): statements run,
/// and answers taken from them; counted per thread, as a test runs its batch on its own, so
/// that tests running at once do not count each other's.
#[cfg(test)]
pub(crate) struct Counts([std::cell::Cell<u64>; 2]);

#[cfg(test)]
impl Counts {
    const fn new() -> Counts {
        Counts([std::cell::Cell::new(0), std::cell::Cell::new(0)])
    }

    fn add(&self, which: usize) {
        self.0[which].set(self.0[which].get() + 1);
    }

    pub(crate) fn get(&self) -> [u64; 2] {
        [self.0[0].get(), self.0[1].get()]
    }
}

/// Forgets what this thread's batch applied or read ahead of its writes, and the plans it
/// kept to apply behind them (`on_claim.rs`, `read_ahead.rs`, `behind.rs`): rolled back, or
/// the batch is over.
pub(crate) fn forget_ahead() {
    on_claim::forget_applied_ahead();
    read_ahead::forget_snapshots_read_ahead();
    behind::forget_behind();
}

/// One page of a list ordered by id: the rows after `after`, at most `limit` of them (`None`:
/// no bound, the whole list as ODM answers it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after: Option<i64>,
    pub limit: Option<i64>,
}
