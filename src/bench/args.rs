//! `odm-devops bench` arguments: how many activities, how many tasks each, and the load shape.

use clap::ArgGroup;

#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(group(ArgGroup::new("load").required(true).args(["concurrency", "rate"])))]
pub struct BenchArgs {
    /// Activities to run (each on a product version of its own).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub activities: u32,
    /// Tasks per activity (pipeline runs one after another).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub tasks: u32,
    /// Closed loop: keep this many activities in flight (measures throughput).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Open loop: start activities so that this many tasks complete per second (measures
    /// latency at a steady load).
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// A PostgreSQL URL whose server gets a fresh database for the run (dropped after);
    /// default: a temporary SQLite file.
    #[arg(long, value_name = "URL", value_parser = postgres_url)]
    pub database: Option<String>,
    /// Server processes on the one database (PostgreSQL: needs `--database`), the load spread
    /// across them; a task run twice is an error.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,
    /// The control for `--replicas`: the same load split evenly across this many deployments
    /// that share nothing but the host (each its own database, simulator, server and driver,
    /// started together); their throughputs are added up.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub independent: u32,
    /// Set by `--independent` on each deployment's bench: say so when ready for the timed part
    /// and start it only on a line read from stdin, so that the deployments' timed parts start
    /// together (`independent::wait_for_go`).
    #[arg(long, hide = true)]
    pub wait_for_go: bool,
}

/// The shape of the load, from `--concurrency` or `--rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` activities in flight; a new one starts when one ends.
    Closed { concurrency: u32 },
    /// A new activity every `tasks / rate` seconds, whatever the service's pace.
    Open { rate: f64 },
}

impl BenchArgs {
    /// What clap cannot say: several replicas need PostgreSQL; independent deployments each
    /// need an activity and an activity in flight, and are not replicas.
    pub fn check(&self) -> Result<(), String> {
        if self.independent > 1 {
            if self.replicas > 1 {
                return Err(format!(
                    "--independent {} and --replicas {} cannot be combined: --independent is the \
                     control for --replicas (run each, and compare)",
                    self.independent, self.replicas
                ));
            }
            let (least, what) = match self.concurrency {
                Some(concurrency) if concurrency < self.activities => {
                    (concurrency, "--concurrency")
                }
                _ => (self.activities, "--activities"),
            };
            if least < self.independent {
                return Err(format!(
                    "--independent {} needs {what} of at least {} (got {least}): each deployment \
                     gets an even share of the load, and at least one",
                    self.independent, self.independent
                ));
            }
        }
        if self.replicas > 1 && self.database.is_none() {
            return Err(format!(
                "--replicas {} needs --database postgres://…: replicas scale out on PostgreSQL. On \
                 SQLite they share one file with one writer at a time, which adds availability, \
                 not throughput (README \"Running several replicas\")",
                self.replicas
            ));
        }
        Ok(())
    }

    /// The flags that give these arguments back, for a bench run as a child process
    /// (`--independent`). Next to the fields, so that a new one is not forgotten here; a test
    /// parses them back.
    pub fn to_command_line(&self) -> Vec<String> {
        let mut line = vec![
            "--activities".to_owned(),
            self.activities.to_string(),
            "--tasks".to_owned(),
            self.tasks.to_string(),
            "--replicas".to_owned(),
            self.replicas.to_string(),
            "--independent".to_owned(),
            self.independent.to_string(),
        ];
        if let Some(concurrency) = self.concurrency {
            line.extend(["--concurrency".to_owned(), concurrency.to_string()]);
        }
        if let Some(rate) = self.rate {
            line.extend(["--rate".to_owned(), rate.to_string()]);
        }
        if let Some(database) = &self.database {
            line.extend(["--database".to_owned(), database.clone()]);
        }
        if self.wait_for_go {
            line.push("--wait-for-go".to_owned());
        }
        line
    }

    pub fn load(&self) -> Load {
        match (self.concurrency, self.rate) {
            (Some(concurrency), _) => Load::Closed { concurrency },
            (None, Some(rate)) => Load::Open { rate },
            // clap requires one of them; a hand-built value without either runs one at a time.
            (None, None) => Load::Closed { concurrency: 1 },
        }
    }
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of task completions per second"
        )),
    }
}

fn postgres_url(text: &str) -> Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err("only a postgres:// URL (the default is a temporary SQLite file)".into())
    }
}
