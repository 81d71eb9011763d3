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
//! * **Only when someone listens.** Every `CHECK_EVERY` the listener counts the other
//!   replicas' LISTEN connections on the database (`pg_stat_activity`, by `application_name`).
//!   A replica alone sends no NOTIFY: on one replica it would cost a round trip in every
//!   transaction that makes work due, and serialize their commits on PostgreSQL's notification
//!   queue lock, for nobody (measured: about a tenth of the PostgreSQL throughput). A replica
//!   that joins is heard by the others within `CHECK_EVERY`; until then their work reaches it
//!   at its tick. When the count cannot be read, NOTIFY is sent.
//! * **Broken connections** (a restart, `pg_terminate_backend`, a network cut) are found by the
//!   read itself or by the count's round trip every `CHECK_EVERY`; the listener reconnects with
//!   backoff, logs the loss once (never the URL), and wakes its engine once when back, since
//!   what was sent in between was not heard.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryResult, QueryableByName, RunQueryDsl};

use super::connection::strip_password;
use super::DbConnection;

/// The one channel, per database (NOTIFY does not cross databases).
pub const CHANNEL: &str = "odm_devops_work";
/// The LISTEN connection's `application_name`, to find it in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "odm-devops listen";

/// How often the LISTEN connection is read for notifications.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How often the other replicas' LISTEN connections are counted, a round trip that also checks
/// the connection (a cut network shows no EOF).
const CHECK_EVERY: Duration = Duration::from_secs(1);
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

/// What a `Db` that notifies needs: who it is (the payload), where to listen, and whether
/// anyone else listens.
pub(crate) struct Notifying {
    pub(crate) tag: String,
    pub(crate) url: String,
    /// Other replicas listen on the database (true until counted, and when it cannot be).
    peers: AtomicBool,
}

impl Notifying {
    pub(crate) fn new(url: String) -> Notifying {
        Notifying {
            tag: uuid::Uuid::new_v4().simple().to_string(),
            url,
            peers: AtomicBool::new(true),
        }
    }
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

/// Just before a write batch that left work due commits: one NOTIFY, when the `Db` notifies
/// (PostgreSQL with `database.listen`) and other replicas listen.
pub(crate) fn notify_others(
    conn: &mut DbConnection,
    notifying: Option<&Notifying>,
) -> QueryResult<()> {
    match (notifying, conn) {
        (Some(notifying), DbConnection::Pg(pg)) if notifying.peers.load(Ordering::Relaxed) => {
            notify(pg, &notifying.tag)
        }
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
    /// Other replicas' LISTEN connections on the database, as last counted.
    fn peers(&self, count: u32);
}

/// Stops the listener's thread when dropped (it notices within `POLL_EVERY`).
pub struct ListenHandle {
    _stop: mpsc::Sender<()>,
}

/// Starts the listener thread for `notifying`'s database.
pub(crate) fn spawn(notifying: Arc<Notifying>, observer: impl ListenObserver) -> ListenHandle {
    let (stop, stopped) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || run(&notifying, &observer, &stopped));
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

fn run(notifying: &Notifying, observer: &impl ListenObserver, stopped: &mpsc::Receiver<()>) {
    let mut backoff = BACKOFF_FIRST;
    let mut lost = false;
    loop {
        let failure = match connect(&notifying.url).and_then(|mut conn| {
            // Counted before it says it is up: "up, no peers" is then never a guess.
            recount(&mut conn, notifying, observer).map_err(|e| e.to_string())?;
            Ok(conn)
        }) {
            Ok(mut conn) => {
                observer.connected(true);
                observer.listening();
                if lost {
                    tracing::info!("the LISTEN connection to PostgreSQL is back: other replicas' work wakes this engine again");
                    lost = false;
                }
                backoff = BACKOFF_FIRST;
                match listen(&mut conn, notifying, observer, stopped) {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        observer.connected(false);
        // Who listens is unknown now: NOTIFY, in case.
        notifying.peers.store(true, Ordering::Relaxed);
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
    notifying: &Notifying,
    observer: &impl ListenObserver,
    stopped: &mpsc::Receiver<()>,
) -> Option<String> {
    let mut checked = Instant::now();
    loop {
        if checked.elapsed() >= CHECK_EVERY {
            if let Err(e) = recount(conn, notifying, observer) {
                return Some(e.to_string());
            }
            checked = Instant::now();
        }
        if stopped_after(stopped, POLL_EVERY) {
            return None;
        }
        let mut others = false;
        for notification in conn.notifications_iter() {
            match notification {
                Ok(n) => others |= n.payload != notifying.tag,
                Err(e) => return Some(e.to_string()),
            }
        }
        if others {
            observer.notified();
        }
    }
}

#[derive(QueryableByName)]
struct Peers {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Counts the other replicas listening: NOTIFY is sent only when there are some.
fn recount(
    conn: &mut PgConnection,
    notifying: &Notifying,
    observer: &impl ListenObserver,
) -> QueryResult<()> {
    let count = count_peers(conn)?;
    notifying.peers.store(count > 0, Ordering::Relaxed);
    observer.peers(u32::try_from(count).unwrap_or(u32::MAX));
    Ok(())
}

/// The other LISTEN connections of this service on the database.
fn count_peers(conn: &mut PgConnection) -> QueryResult<i64> {
    diesel::sql_query(
        "SELECT count(*) AS count FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind::<Text, _>(APPLICATION_NAME)
    .get_result::<Peers>(conn)
    .map(|p| p.count)
}
