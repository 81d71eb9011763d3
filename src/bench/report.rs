//! What a run measured, the summary a person reads and the one line a script reads.

use super::args::Load;

/// Why errors were counted (their sum is the `errors` of the last line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    /// Activity creations answered with a non-2xx status or not at all.
    pub create: u64,
    /// Status polls answered with a non-2xx status or not at all.
    pub poll: u64,
    /// Activities still in flight past the per-activity deadline, or when the run gave up.
    pub timeouts: u64,
    /// Activities created that did not end PROCESSED (FAILED, ABORTED, or still running).
    pub not_processed: u64,
    /// Simulated pipelines whose callback was refused or got no answer.
    pub callbacks: u64,
    /// Tasks whose pipeline the simulator saw run more than once (a double dispatch).
    pub runs_twice: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.create
            + self.poll
            + self.timeouts
            + self.not_processed
            + self.callbacks
            + self.runs_twice
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub activities: u32,
    pub tasks: u32,
    pub load: Load,
    /// Server processes on the one database (`--replicas`).
    pub replicas: u32,
    /// Runs each of them sent to the simulator, in order (the load's spread).
    pub runs_per_replica: Vec<u64>,
    /// The timed part: from the first activity created to the last one ended.
    pub seconds: f64,
    /// Tasks of PROCESSED activities.
    pub tasks_processed: u64,
    /// Callback answered → next task's run request received, one sample per task after the first.
    pub gaps_ms: Vec<f64>,
    /// The largest of the servers' (one per replica).
    pub peak_rss_mib: f64,
    pub idle_rss_mib: f64,
    /// The first server's.
    pub ready_ms: f64,
    pub errors: Errors,
    /// Transactions the server committed during the timed part (`commits.rs`).
    pub commits: Option<u64>,
    /// Status lists asked of the service during the timed part (once a second, a backstop:
    /// the load besides the activities themselves) and their mean round trip.
    pub polls: u64,
    pub poll_ms: f64,
}

impl Report {
    pub fn tasks_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tasks_processed as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Commits per task processed (0 when nothing was processed or not counted).
    pub fn commits_per_task(&self) -> f64 {
        match self.commits {
            Some(commits) if self.tasks_processed > 0 => {
                commits as f64 / self.tasks_processed as f64
            }
            _ => 0.0,
        }
    }

    /// The last line, exactly as documented (see the module doc).
    pub fn last_line(&self) -> String {
        let (concurrency, rate) = match self.load {
            Load::Closed { concurrency } => (concurrency, 0.0),
            Load::Open { rate } => (0, rate),
        };
        let mut gaps = self.gaps_ms.clone();
        gaps.sort_by(f64::total_cmp);
        format!(
            "bench: activities={} tasks={} concurrency={concurrency} rate={rate} replicas={} \
             seconds={:.3} tasks_per_s={:.1} p50_ms={:.2} p99_ms={:.2} peak_rss_mib={:.1} \
             idle_rss_mib={:.1} ready_ms={:.1} commits_per_task={:.2} errors={}",
            self.activities,
            self.tasks,
            self.replicas,
            self.seconds,
            self.tasks_per_s(),
            percentile(&gaps, 50.0),
            percentile(&gaps, 99.0),
            self.peak_rss_mib,
            self.idle_rss_mib,
            self.ready_ms,
            self.commits_per_task(),
            self.errors.total(),
        )
    }

    /// The human part, printed before the last line.
    pub fn summary(&self) -> String {
        let mut gaps = self.gaps_ms.clone();
        gaps.sort_by(f64::total_cmp);
        let e = &self.errors;
        let load = match self.load {
            Load::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Load::Open { rate } => format!("open loop, {rate} task completions/s offered"),
        };
        format!(
            "{} activities x {} tasks, {load}\n\
             \x20 timed part       {:.3} s, {} tasks processed, {:.1} task completions/s\n\
             \x20 callback -> next run request ({} samples): p50 {:.2} ms, p90 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms\n\
             \x20 server           ready in {:.1} ms, idle RSS {:.1} MiB, peak RSS {:.1} MiB\n\
             \x20 commits          {} during the timed part, {:.2} per task\n\
             \x20 status polls     {} during the timed part, {:.1} ms round trip on average\n\
             \x20 replicas         {}, runs dispatched by each: {}\n\
             \x20 errors           {} (create {}, poll {}, timeout {}, not PROCESSED {}, callback {}, \
             task run twice {})",
            self.activities,
            self.tasks,
            self.seconds,
            self.tasks_processed,
            self.tasks_per_s(),
            gaps.len(),
            percentile(&gaps, 50.0),
            percentile(&gaps, 90.0),
            percentile(&gaps, 99.0),
            gaps.last().copied().unwrap_or(0.0),
            self.ready_ms,
            self.idle_rss_mib,
            self.peak_rss_mib,
            self.commits.map_or("not counted".to_owned(), |n| n.to_string()),
            self.commits_per_task(),
            self.polls,
            self.poll_ms,
            self.replicas,
            self.runs_per_replica
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            e.total(),
            e.create,
            e.poll,
            e.timeouts,
            e.not_processed,
            e.callbacks,
            e.runs_twice,
        )
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
