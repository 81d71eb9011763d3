//! One batch of writes in one transaction: each write in its own savepoint, one COMMIT.
//!
//! The savepoints are managed here rather than with a nested `Connection::transaction` per
//! write, to save a round trip per write on PostgreSQL: the transaction and the first savepoint
//! open in one message, a write that succeeded releases its savepoint and opens the next one in
//! one message, and the last one is released by the COMMIT. Savepoints a write opens itself
//! (diesel's nested transactions) nest inside.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::Connection;

use super::{QueuedWrite, Ran};
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
) -> Result<(), DbError> {
    begin(conn)?;
    let last = batch.len().saturating_sub(1);
    for (i, write) in batch.iter_mut().enumerate() {
        match write.run(conn) {
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
    if let DbConnection::Pg(_) = conn {
        before_postgres_commit(conn)?;
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

/// The last statement of every PostgreSQL batch, inside its transaction: what must commit with
/// the batch's writes, once per batch rather than once per write (e.g. the wake-up sent to the
/// other replicas).
fn before_postgres_commit(_conn: &mut DbConnection) -> Result<(), DbError> {
    Ok(())
}
