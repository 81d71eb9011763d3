//! Wake-ups across replicas on PostgreSQL (DESIGN §10): a transaction that leaves engine work
//! due now sends `NOTIFY` on one channel before it commits, and every replica keeps one
//! connection of its own (outside the pool) `LISTEN`ing on it, which wakes its engine. The
//! engine's tick stays as the fallback: a lost notification delays work by a tick at most.
//!
//! * **Coalesced.** A write marks the work it made due (`mark_work_due`, in `apply_plan`); the
//!   transaction sends one `pg_notify` before its commit however many marks it holds, and
//!   PostgreSQL delivers identical notifications of one transaction once. The listener wakes
//!   its engine once for everything read together; the waker holds at most one wake-up.
//! * **Not its own echo.** The payload is the sending `Db`'s tag: a replica's listener skips its
//!   own notifications (its engine was already woken in process), or every local change would
//!   cost a second, empty claim.
//! * **Waiting.** diesel's `PgConnection` cannot block on its socket for notifications (libpq's
//!   `PQconsumeInput` + `PQnotifies`, which `notifications_iter` wraps, only read what arrived),
//!   and reaching the socket takes `unsafe` (`pq-sys`), which this crate forbids. The `postgres`
//!   crate could block, but brings tokio-postgres and its own TLS stack (`sslmode=require`, as on
//!   Azure, would need yet another crate) where libpq already speaks every `database.url`. So
//!   a thread of its own reads the connection every `POLL_EVERY` (a non-blocking `recv`): a
//!   wake-up from another replica lands within ~5 ms, for ~200 cheap syscalls a second.
//! * **Broken connections** (a restart, `pg_terminate_backend`, a network cut) are found by the
//!   read itself or by re-issuing `LISTEN` every `CHECK_EVERY`; the listener reconnects with
//!   backoff, logs the loss once (never the URL), and wakes its engine once when back, since
//!   what was sent in between was not heard.

use std::cell::Cell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryResult, RunQueryDsl};

use super::connection::strip_password;
use super::DbConnection;

/// The one channel, per database (NOTIFY does not cross databases).
pub const CHANNEL: &str = "odm_devops_work";
/// The LISTEN connection's `application_name`, to find it in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "odm-devops listen";

/// How often the LISTEN connection is read for notifications.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How often the LISTEN connection is checked with a round trip (a cut network shows no EOF).
const CHECK_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

thread_local! {
    /// The transaction running on this thread left engine work due (set by `apply_plan`).
    static WORK_DUE: Cell<bool> = const { Cell::new(false) };
}

/// The transaction under way on this thread leaves engine work due now: other replicas are to
/// be woken when it commits.
pub(crate) fn mark_work_due() {
    WORK_DUE.with(|due| due.set(true));
}

/// Whether a mark was left since the last call (and clears it).
pub(crate) fn take_work_due() -> bool {
    WORK_DUE.with(|due| due.replace(false))
}

/// What a `Db` that notifies needs: who it is (the payload) and where to listen.
pub(crate) struct Notifying {
    pub(crate) tag: String,
    pub(crate) url: String,
}

/// Sends the wake-up on `conn`, inside the caller's transaction (delivered at its commit, not at
/// all if it rolls back). Identical notifications of one transaction are delivered once.
pub fn notify(conn: &mut PgConnection, tag: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(CHANNEL)
        .bind::<Text, _>(tag)
        .execute(conn)
        .map(|_| ())
}

/// Just before a write transaction commits: one NOTIFY when something in it marked work due
/// (and the `Db` notifies, on PostgreSQL). Always clears the mark.
pub(crate) fn notify_if_work_due(
    conn: &mut DbConnection,
    notifying: Option<&Notifying>,
) -> QueryResult<()> {
    let due = take_work_due();
    match (due, notifying, conn) {
        (true, Some(notifying), DbConnection::Pg(pg)) => notify(pg, &notifying.tag),
        _ => Ok(()),
    }
}

/// What the listener tells its owner (the engine's waker and the metrics live outside `db`).
pub trait ListenObserver: Send + 'static {
    /// Another replica committed work: wake the engine (once for all notifications read
    /// together).
    fn notified(&self);
    /// The LISTEN connection was (re)made: notifications sent before were not heard, so the
    /// engine should look for work once.
    fn listening(&self);
    /// The LISTEN connection is up (`true`) or lost (`false`).
    fn connected(&self, up: bool);
}

/// Stops the listener's thread when dropped (it notices within `POLL_EVERY`).
pub struct ListenHandle {
    _stop: mpsc::Sender<()>,
}

/// Starts the listener thread for `notifying`'s database.
pub(crate) fn spawn(notifying: &Notifying, observer: impl ListenObserver) -> ListenHandle {
    let (stop, stopped) = mpsc::channel();
    let (url, tag) = (notifying.url.clone(), notifying.tag.clone());
    let spawned = std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || run(&url, &tag, &observer, &stopped));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the LISTEN thread: other replicas' work is found at each engine tick only");
    }
    ListenHandle { _stop: stop }
}

/// True once the handle is dropped; otherwise waits `d` first.
fn stopped_after(stopped: &mpsc::Receiver<()>, d: Duration) -> bool {
    matches!(
        stopped.recv_timeout(d),
        Ok(()) | Err(RecvTimeoutError::Disconnected)
    )
}

fn run(url: &str, tag: &str, observer: &impl ListenObserver, stopped: &mpsc::Receiver<()>) {
    let mut backoff = BACKOFF_FIRST;
    let mut lost = false;
    loop {
        let failure = match connect(url) {
            Ok(mut conn) => {
                observer.connected(true);
                observer.listening();
                if lost {
                    tracing::info!("the LISTEN connection to PostgreSQL is back: other replicas' work wakes this engine again");
                    lost = false;
                }
                backoff = BACKOFF_FIRST;
                match listen(&mut conn, tag, observer, stopped) {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        observer.connected(false);
        if !lost {
            tracing::warn!(error = %failure, "the LISTEN connection to PostgreSQL is lost; reconnecting with backoff (meanwhile other replicas' work is found at each engine tick)");
            lost = true;
        } else {
            tracing::debug!(error = %failure, "reconnecting the LISTEN connection failed");
        }
        if stopped_after(stopped, backoff) {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect(url: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| strip_password(e).to_string())?;
    conn.batch_execute(&format!(
        "SET application_name = '{APPLICATION_NAME}'; LISTEN {CHANNEL}"
    ))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Reads notifications until the connection fails (its error) or the handle is dropped (None).
fn listen(
    conn: &mut PgConnection,
    tag: &str,
    observer: &impl ListenObserver,
    stopped: &mpsc::Receiver<()>,
) -> Option<String> {
    let mut checked = Instant::now();
    loop {
        if stopped_after(stopped, POLL_EVERY) {
            return None;
        }
        let mut others = false;
        for notification in conn.notifications_iter() {
            match notification {
                Ok(n) => others |= n.payload != tag,
                Err(e) => return Some(e.to_string()),
            }
        }
        if others {
            observer.notified();
        }
        if checked.elapsed() >= CHECK_EVERY {
            // LISTEN again is harmless, and keeps `pg_stat_activity.query` saying what this is.
            if let Err(e) = conn.batch_execute(&format!("LISTEN {CHANNEL}")) {
                return Some(e.to_string());
            }
            checked = Instant::now();
        }
    }
}
