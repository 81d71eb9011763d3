//! `/metrics`: Prometheus text format 0.0.4. Outside `/api`; open like `/health` unless
//! `metrics.token` is set (the perimeter checks it). Nothing on it is a secret, an id or a value a
//! request can choose.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};

use super::ApiState;
use crate::clock::now_ms;
use crate::db::{self, DbError, WorkCounts};
use crate::metrics::CONTENT_TYPE;
use crate::telemetry::error_chain as chain;

/// How old the stored-work gauges may be (DESIGN §14): reading them scans the activities and
/// tasks tables, which a scraper, or anyone while `/metrics` is open, must not be able to
/// repeat at will.
pub const STORED_WORK_MAX_AGE: Duration = Duration::from_secs(5);

/// The stored-work gauges of this process, read at most every `STORED_WORK_MAX_AGE`: `None`
/// when the database could not be read (kept as long, so a database in trouble is not asked
/// again at every scrape).
pub type StoredWork = Cached<Option<WorkCounts>>;

/// The stored work is read in one pass on a pooled connection (never the writer's), so
/// a scrape does not queue behind the engine's writes; if it fails the page says so and keeps
/// the in-process metrics.
pub async fn page(state: web::Data<ApiState>) -> HttpResponse {
    let db = state.lifecycle.db().clone();
    let work = state
        .stored_work
        .get_or_read(|| async move {
            let now = now_ms();
            db.read(move |conn| db::work_counts(conn, now).map_err(DbError::from))
                .await
                .inspect_err(
                    |e| tracing::warn!(error = %chain(e), "metrics: the database could not be read"),
                )
                .ok()
        })
        .await;
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.render(work.as_ref(), now_ms()))
}

/// A value read at most once per `max_age`. Callers arriving while it is being read wait for
/// that read and share it: concurrent scrapes cost one read.
pub struct Cached<T> {
    max_age: Duration,
    slot: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Default for Cached<T> {
    fn default() -> Self {
        Cached::new(STORED_WORK_MAX_AGE)
    }
}

impl<T: Clone> Cached<T> {
    pub fn new(max_age: Duration) -> Cached<T> {
        Cached {
            max_age,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn get_or_read<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((read_at, value)) = slot.as_ref() {
            if read_at.elapsed() < self.max_age {
                return value.clone();
            }
        }
        let value = read().await;
        *slot = Some((Instant::now(), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[actix_web::test]
    async fn concurrent_readers_share_one_read_and_it_is_kept_for_its_age() {
        let cache = Arc::new(Cached::new(Duration::from_millis(300)));
        let reads = Arc::new(AtomicUsize::new(0));
        let read = |reads: Arc<AtomicUsize>| async move {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            // Slow enough that every reader below arrives while it runs.
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            n
        };
        let readers = (0..8).map(|_| {
            let (cache, reads) = (cache.clone(), reads.clone());
            async move { cache.get_or_read(|| read(reads)).await }
        });
        let values = futures_util::future::join_all(readers).await;
        assert_eq!(values, vec![1; 8], "one read, shared");
        assert_eq!(cache.get_or_read(|| read(reads.clone())).await, 1);
        actix_web::rt::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(cache.get_or_read(|| read(reads.clone())).await, 2);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
