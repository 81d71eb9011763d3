//! One batch of writes in one transaction: each write in its own savepoint, one COMMIT.
//!
//! The savepoints are managed here rather than with a nested `Connection::transaction` per
//! write, to save a round trip per write on PostgreSQL: the transaction and the first savepoint
//! open in one message, a write that succeeded releases its savepoint and opens the next one in
//! one message, and the last one is released by the COMMIT. Savepoints a write opens itself
//! (diesel's nested transactions) nest inside.
//!
//! On PostgreSQL the batch also carries the wake-up of the other replicas (`listen.rs`): one
//! NOTIFY before the COMMIT when a write that stayed left engine work due, not one per write.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::Connection;

use super::{QueuedWrite, Ran};
use crate::db::listen::{self, Notifying};
use crate::db::{DbConnection, DbError};

/// Runs `batch` in one transaction and commits it. A write that fails is rolled back to its
/// savepoint and the others stay; a write that panicked leaves the transaction in an unknown
/// state, so the whole batch fails (the caller reopens the connection).
///
/// Row locks a write takes (PostgreSQL: the activity's `FOR UPDATE`, a claim's rows) are held
/// until this commit: the batch's later writes run on the same connection and never wait for
/// them; another replica's claims pass them by (`SKIP LOCKED`) and its other writes of the same
/// activity wait for this commit, a few milliseconds.
pub(super) fn run_batch(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    notifying: Option<&Notifying>,
) -> Result<(), DbError> {
    begin(conn)?;
    // A mark left on this thread by a batch that failed is not this batch's.
    listen::take_work_due();
    let mut work_due = false;
    let last = batch.len().saturating_sub(1);
    for (i, write) in batch.iter_mut().enumerate() {
        let ran = write.run(conn);
        // Only a write that stays counts: a rolled-back one made nothing due.
        work_due |= listen::take_work_due() && matches!(ran, Ran::Succeeded);
        match ran {
            Ran::Succeeded if i == last => {}
            Ran::Succeeded => conn.batch_execute(NEXT_SAVEPOINT)?,
            // The savepoint stays defined: the next write starts inside it again.
            Ran::Failed => conn.batch_execute(ROLL_BACK_THIS_WRITE)?,
            Ran::Panicked => {
                // A panic is a bug; the savepoint state is unknown, so nothing of this batch
                // stays.
                return Err(DbError::Commit(
                    "a write of this group panicked; the whole group was rolled back".into(),
                ));
            }
        }
    }
    if work_due {
        listen::notify_others(conn, notifying)?;
    }
    <DbConnection as Connection>::TransactionManager::commit_transaction(conn)
        .map_err(DbError::from)
}

const NEXT_SAVEPOINT: &str = "RELEASE SAVEPOINT odm_write; SAVEPOINT odm_write";
const ROLL_BACK_THIS_WRITE: &str = "ROLLBACK TO SAVEPOINT odm_write";

/// Opens the transaction and the first write's savepoint. SQLite: `BEGIN IMMEDIATE` takes the
/// write lock at once (another process sharing the file waits for it here, under
/// `busy_timeout`, rather than fail at its first write).
fn begin(conn: &mut DbConnection) -> Result<(), DbError> {
    match conn {
        DbConnection::Sqlite(sqlite) => AnsiTransactionManager::begin_transaction_sql(
            sqlite,
            "BEGIN IMMEDIATE; SAVEPOINT odm_write",
        )?,
        DbConnection::Pg(pg) => {
            AnsiTransactionManager::begin_transaction_sql(pg, "BEGIN; SAVEPOINT odm_write")?
        }
    }
    Ok(())
}
