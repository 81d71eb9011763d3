//! The in-process values: counters, histograms and families of labelled series, all on std
//! atomics (relaxed: each value is read on its own, at scrape time).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Seconds, kept as whole microseconds so they add up with one atomic instruction.
#[derive(Debug, Default)]
pub struct Seconds(AtomicU64);

impl Seconds {
    pub fn add(&self, d: Duration) {
        self.0
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn get(&self) -> f64 {
        self.0.load(Relaxed) as f64 / 1e6
    }
}

/// Observations counted in buckets (each bucket on its own; cumulated when read).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; one more bucket holds the rest (`+Inf`).
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum: Seconds,
}

/// A histogram as the exposition shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at most that)`: cumulative, the last bound `+Inf`.
    pub cumulative: Vec<(f64, u64)>,
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().map_or(0, |(_, n)| *n)
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: Seconds::default(),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum.add(d);
    }

    /// The count is the `+Inf` bucket, so `_count` always equals it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter())
            .map(|(bound, bucket)| {
                total += bucket.load(Relaxed);
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum: self.sum.get(),
        }
    }
}

/// Series keyed by their label values, made on first use. Recording takes a shared lock;
/// only a series' first observation takes the exclusive one.
pub struct Family<K, V> {
    make: fn() -> V,
    series: RwLock<HashMap<K, V>>,
}

impl<K: Hash + Eq + Clone + Ord, V> Family<K, V> {
    pub fn new(make: fn() -> V) -> Family<K, V> {
        Family {
            make,
            series: RwLock::new(HashMap::new()),
        }
    }

    pub fn with<R>(&self, key: &K, record: impl FnOnce(&V) -> R) -> R {
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return record(series);
        }
        let mut all = self.series.write().unwrap_or_else(PoisonError::into_inner);
        record(all.entry(key.clone()).or_insert_with(self.make))
    }

    /// Every series, ordered by key (a stable page from one scrape to the next).
    pub fn read<T>(&self, mut read: impl FnMut(&V) -> T) -> Vec<(K, T)> {
        let all = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<(K, T)> = all.iter().map(|(k, v)| (k.clone(), read(v))).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.01, 0.1, 1.0];

    #[test]
    fn histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() {
        let h = Histogram::new(BOUNDS);
        for ms in [5, 10, 50, 500, 500, 5_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(
            s.cumulative,
            vec![(0.01, 2), (0.1, 3), (1.0, 5), (f64::INFINITY, 6)],
            "a value equal to a bound falls in that bound's bucket"
        );
        assert_eq!(s.count(), 6);
        assert!((s.sum - 6.065).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let s = Histogram::new(BOUNDS).snapshot();
        assert_eq!(s.cumulative.len(), 4);
        assert!(s.cumulative.iter().all(|(_, n)| *n == 0));
        assert_eq!((s.count(), s.sum), (0, 0.0));
    }

    #[test]
    fn a_family_makes_a_series_per_key_and_reads_them_in_order() {
        let family: Family<(&str, u16), Counter> = Family::new(Counter::default);
        family.with(&("b", 200), Counter::inc);
        family.with(&("a", 500), Counter::inc);
        family.with(&("b", 200), |c| c.add(2));
        assert_eq!(
            family.read(Counter::get),
            vec![(("a", 500), 1), (("b", 200), 3)]
        );
    }
}
