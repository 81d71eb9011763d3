//! Command line: `serve` (default), `migrate`, `demo`, `simulate-azure`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::Application;
use crate::config::Settings;
use crate::db::Db;

#[derive(Parser)]
#[command(
    name = "odm-devops",
    version,
    about = "DevOps lifecycle of data products (ODM-compatible)"
)]
struct Cli {
    /// Settings file overriding config/default.yaml (any subset of its keys).
    #[arg(long, global = true, env = "ODM_DEVOPS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Run the whole flow (dev → test → prod) on the built-in Azure DevOps simulator and tell
    /// what happens; no account needed, nothing is left behind.
    Demo,
    /// Run the Azure DevOps + Entra ID simulator alone (for trying pipelines, tests, benchmarks).
    SimulateAzure(crate::simulator::SimulateAzureArgs),
    /// Measure the service end to end: this binary as server and simulator, under load.
    Bench(crate::bench::BenchArgs),
}

pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let from_environment = |subcommand: &str| {
        matches
            .subcommand_matches(subcommand)
            .and_then(|m| m.value_source("config"))
            == Some(ValueSource::EnvVariable)
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config),
        Command::Migrate => migrate(cli.config),
        Command::Demo => {
            if cli.config.is_some() {
                println!(
                    "demo: runs on its own settings (a temporary database, the built-in \
                     simulator); --config and ODM_DEVOPS_CONFIG are not read"
                );
            }
            demo()
        }
        Command::SimulateAzure(mut args) => {
            // ODM_DEVOPS_CONFIG names the service's settings, never the simulator's file:
            // exported for the service, it stopped the simulator of the same shell.
            if from_environment("simulate-azure") {
                args.config = None;
            }
            simulate_azure(args)
        }
        Command::Bench(args) => bench(&args, cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the error and every cause under it, on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    crate::telemetry::init(&settings.log);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)
            .await
            .context("the service did not start")?;
        app.run_until_stopped()
            .await
            .context("the HTTP server stopped with an error")
    })
}

fn demo() -> anyhow::Result<()> {
    crate::telemetry::init(&crate::demo::quiet_logs());
    let options = crate::demo::DemoOptions::default();
    actix_web::rt::System::new()
        .block_on(async move { crate::demo::run(&mut std::io::stdout(), &options).await })
}

fn simulate_azure(args: crate::simulator::SimulateAzureArgs) -> anyhow::Result<()> {
    actix_web::rt::System::new()
        .block_on(crate::simulator::serve_cli(args))
        .context("the Azure DevOps simulator stopped")
}

fn bench(args: &crate::bench::BenchArgs, config: Option<PathBuf>) -> anyhow::Result<()> {
    crate::bench::run_cli(args, config.as_deref())
}

fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    crate::telemetry::init(&settings.log);
    Db::connect(settings.database.url.expose(), 1).context("migrating the database")?;
    println!("database is up to date");
    Ok(())
}
