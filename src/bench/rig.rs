//! The processes under test, started from the running binary: the Azure DevOps simulator, then
//! the server pointed at it, timed from its start to its first ready answer, then the other
//! replicas (`--replicas`) on the same database.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::database::BenchDb;
use super::procs::{free_port, Proc, TempDir};
use super::{workload, BenchArgs};

const READY_WITHIN: Duration = Duration::from_secs(30);

/// Dropped in field order: the servers, the simulator, the database, the folder.
pub(crate) struct Rig {
    pub server: Proc,
    /// `--replicas` beyond the first.
    pub others: Vec<Replica>,
    pub simulator: Proc,
    pub server_url: String,
    pub simulator_url: String,
    pub ready_ms: f64,
    pub database: BenchDb,
    /// The run's folder: logs, the SQLite file; kept when the run had errors.
    pub dir: TempDir,
}

impl Rig {
    pub async fn start(
        args: &BenchArgs,
        exe: &Path,
        config: Option<&Path>,
        client: &awc::Client,
    ) -> anyhow::Result<Rig> {
        let dir = TempDir::new()?;
        let database = match &args.database {
            Some(url) => BenchDb::postgres(url)?,
            None => BenchDb::sqlite(&dir.0),
        };

        let secret = uuid::Uuid::new_v4().simple().to_string();
        let runs = u64::from(args.activities) * u64::from(args.tasks);
        let sim_config = dir.0.join("simulator.json");
        std::fs::write(
            &sim_config,
            workload::simulator_config(&secret, runs).to_string(),
        )
        .with_context(|| format!("cannot write {}", sim_config.display()))?;
        let sim_port = free_port()?;
        let simulator_url = format!("http://127.0.0.1:{sim_port}");
        let mut command = Command::new(exe);
        command
            .arg("simulate-azure")
            .arg("--bind")
            .arg(format!("127.0.0.1:{sim_port}"))
            .arg("--config")
            .arg(&sim_config)
            .env_remove("RUST_LOG");
        let mut simulator = Proc::spawn("simulator", command, dir.0.join("simulator.log"))?;
        wait_ready(
            client,
            &format!("{simulator_url}/_sim/stats"),
            &mut simulator,
        )
        .await?;

        let server_env = ServerEnv {
            exe,
            config,
            database_url: database.url(),
            simulator_url: &simulator_url,
            client_secret: &secret,
        };
        let started = Instant::now();
        let first = server_env.start(client, &dir.0.join("server.log")).await?;
        let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The others once the first has migrated the database; each with its own public_url,
        // so a pipeline calls back the replica that dispatched it.
        let mut others = Vec::new();
        for n in 2..=args.replicas {
            let log = dir.0.join(format!("server{n}.log"));
            others.push(server_env.start(client, &log).await?);
        }

        Ok(Rig {
            server: first.server,
            simulator,
            server_url: first.url,
            simulator_url,
            ready_ms,
            others,
            database,
            dir,
        })
    }

    /// Every server's base URL, the first one first.
    pub fn server_urls(&self) -> Vec<String> {
        std::iter::once(self.server_url.clone())
            .chain(self.others.iter().map(|r| r.url.clone()))
            .collect()
    }

    /// Every server process, the first one first.
    pub fn servers_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        std::iter::once(&mut self.server).chain(self.others.iter_mut().map(|r| &mut r.server))
    }
}

/// A server process besides the first (`--replicas`).
pub(crate) struct Replica {
    pub server: Proc,
    pub url: String,
}

/// What every server of the run is started with.
struct ServerEnv<'a> {
    exe: &'a Path,
    config: Option<&'a Path>,
    database_url: &'a str,
    simulator_url: &'a str,
    client_secret: &'a str,
}

impl ServerEnv<'_> {
    /// `serve` on a free loopback port (its own `public_url`), once it answers ready.
    async fn start(&self, client: &awc::Client, log: &Path) -> anyhow::Result<Replica> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let simulator_url = self.simulator_url;
        let mut command = Command::new(self.exe);
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        command.arg("serve").env_remove("RUST_LOG");
        let executor = "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__";
        let settings = [
            ("ODM_DEVOPS__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("ODM_DEVOPS__SERVER__PUBLIC_URL", url.clone()),
            ("ODM_DEVOPS__DATABASE__URL", self.database_url.to_owned()),
            ("ODM_DEVOPS__LOG__FILTER", "warn".into()),
            ("ODM_DEVOPS__ENGINE__TASK_TIMEOUT_SECS", "3600".into()),
            ("ODM_DEVOPS__ENGINE__POLL_AFTER_SECS", "3600".into()),
            (&format!("{executor}ACTIVE"), "true".into()),
            (&format!("{executor}BASE_URL"), simulator_url.to_owned()),
            (
                &format!("{executor}AUTH__TOKEN_URL"),
                format!("{simulator_url}/{}/oauth2/v2.0/token", workload::TENANT),
            ),
            (
                &format!("{executor}AUTH__CLIENT_ID"),
                workload::CLIENT_ID.into(),
            ),
            (
                &format!("{executor}AUTH__CLIENT_SECRET"),
                self.client_secret.to_owned(),
            ),
        ];
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut server = Proc::spawn("server", command, log.to_owned())?;
        wait_ready(client, &format!("{url}/health/ready"), &mut server).await?;
        Ok(Replica { server, url })
    }
}

/// Polls `url` every millisecond until it answers 200 (or the process exits, or 30 s pass).
async fn wait_ready(client: &awc::Client, url: &str, process: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(response) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        process.check_alive()?;
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within {READY_WITHIN:?}");
        }
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
}
