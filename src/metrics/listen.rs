//! The LISTEN connection of this replica (PostgreSQL, `database.listen`, `db/listen.rs`): is it
//! up, how many other replicas listen, how many engine wake-ups their NOTIFY brought, how often
//! it was lost.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use super::series::Counter;
use super::text::{Exposition, Kind};
use super::Metrics;

#[derive(Debug, Default)]
pub(super) struct ListenSeries {
    connected: AtomicBool,
    peers: AtomicU32,
    wakeups: Counter,
    lost: Counter,
}

impl Metrics {
    /// The LISTEN connection is up (`true`), or was lost or could not be made (`false`).
    pub fn listen_connected(&self, up: bool) {
        let was = self.listen.connected.swap(up, Relaxed);
        if was && !up {
            self.listen.lost.inc();
        }
    }

    /// Other replicas' LISTEN connections on the database, as last counted.
    pub fn listen_peers(&self, count: u32) {
        self.listen.peers.store(count, Relaxed);
    }

    /// Another replica's NOTIFY woke this engine (once for the notifications read together).
    pub fn listen_wakeup(&self) {
        self.listen.wakeups.inc();
    }

    pub(super) fn render_listen(&self, e: &mut Exposition) {
        let series = &self.listen;
        e.family(
            "odm_devops_database_listening",
            Kind::Gauge,
            "1 while this replica's LISTEN connection to PostgreSQL is up; 0 when it is lost, \
             and always on SQLite or with database.listen: false.",
            [([], f64::from(u8::from(series.connected.load(Relaxed))))],
        );
        e.family(
            "odm_devops_database_listen_peers",
            Kind::Gauge,
            "Other replicas listening on the database, counted every second while the LISTEN \
             connection is up (0: this replica sends no NOTIFY, nobody would hear it).",
            [([], f64::from(series.peers.load(Relaxed)))],
        );
        e.family(
            "odm_devops_database_notify_wakeups_total",
            Kind::Counter,
            "Engine wake-ups brought by other replicas' NOTIFY (notifications read together \
             count once).",
            [([], series.wakeups.get() as f64)],
        );
        e.family(
            "odm_devops_database_listen_lost_total",
            Kind::Counter,
            "Times this replica's LISTEN connection was lost (it reconnects with backoff).",
            [([], series.lost.get() as f64)],
        );
    }
}
