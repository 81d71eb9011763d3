//! The two processes under test, started from the running binary: the Azure DevOps simulator,
//! then the server pointed at it, timed from its start to its first ready answer.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::database::BenchDb;
use super::procs::{free_port, Proc, TempDir};
use super::{workload, BenchArgs};

const READY_WITHIN: Duration = Duration::from_secs(30);

/// Dropped in field order: the server, the simulator, the database, the folder.
pub(crate) struct Rig {
    pub server: Proc,
    pub simulator: Proc,
    pub server_url: String,
    pub simulator_url: String,
    pub ready_ms: f64,
    pub database: BenchDb,
    _dir: TempDir,
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

        let port = free_port()?;
        let server_url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(exe);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.arg("serve").env_remove("RUST_LOG");
        let executor = "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__";
        let settings = [
            ("ODM_DEVOPS__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("ODM_DEVOPS__SERVER__PUBLIC_URL", server_url.clone()),
            ("ODM_DEVOPS__DATABASE__URL", database.url().to_owned()),
            ("ODM_DEVOPS__LOG__FILTER", "warn".into()),
            ("ODM_DEVOPS__ENGINE__TASK_TIMEOUT_SECS", "3600".into()),
            ("ODM_DEVOPS__ENGINE__POLL_AFTER_SECS", "3600".into()),
            (&format!("{executor}ACTIVE"), "true".into()),
            (&format!("{executor}BASE_URL"), simulator_url.clone()),
            (
                &format!("{executor}AUTH__TOKEN_URL"),
                format!("{simulator_url}/{}/oauth2/v2.0/token", workload::TENANT),
            ),
            (
                &format!("{executor}AUTH__CLIENT_ID"),
                workload::CLIENT_ID.into(),
            ),
            (&format!("{executor}AUTH__CLIENT_SECRET"), secret),
        ];
        for (key, value) in settings {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut server = Proc::spawn("server", command, dir.0.join("server.log"))?;
        wait_ready(client, &format!("{server_url}/health/ready"), &mut server).await?;
        let ready_ms = started.elapsed().as_secs_f64() * 1000.0;

        Ok(Rig {
            server,
            simulator,
            server_url,
            simulator_url,
            ready_ms,
            database,
            _dir: dir,
        })
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
