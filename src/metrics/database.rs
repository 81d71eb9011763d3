//! The writer's group commits (`db::WriteCounts`): how many transactions this replica
//! committed and how many writes they carried. writes / commits is the mean batch size; the
//! benchmark's `commits_per_task` on SQLite is read from here.

use std::sync::{Arc, OnceLock};

use super::text::{Exposition, Kind};
use super::Metrics;
use crate::db::{Db, WriteCounts};

/// Where the counts are read at scrape time (set once the database is open).
pub(super) type WriteSource = OnceLock<Arc<dyn Fn() -> WriteCounts + Send + Sync>>;

impl Metrics {
    /// The page shows the commits of `db`'s writer from now on.
    pub fn count_writes_of(&self, db: &Db) {
        let db = db.clone();
        let _ = self.writes.set(Arc::new(move || db.write_counts()));
    }

    pub(super) fn database(&self, e: &mut Exposition) {
        let Some(source) = self.writes.get() else {
            return;
        };
        let counts = source();
        e.family(
            "odm_devops_database_commits_total",
            Kind::Counter,
            "Transactions this replica's writer committed; each carries a batch of writes \
             (group commit).",
            [([], counts.commits as f64)],
        );
        e.family(
            "odm_devops_database_writes_total",
            Kind::Counter,
            "Writes (requests' and engine steps' database changes) carried by those commits.",
            [([], counts.writes as f64)],
        );
        e.family(
            "odm_devops_database_write_queue",
            Kind::Gauge,
            "Writes waiting for this replica's writer now (refused with 503 beyond \
             database.write_queue).",
            [([], counts.queued as f64)],
        );
    }
}
