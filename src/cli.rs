//! Command line: `serve` (default), `migrate`, `demo`, `simulate-azure`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::Settings;
use crate::db::Db;
use crate::telemetry::error_chain as chain;

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
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config),
        Command::Migrate => migrate(cli.config),
        Command::Demo => demo(),
        Command::SimulateAzure(args) => simulate_azure(args),
        Command::Bench(args) => bench(&args, cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn serve(config: Option<PathBuf>) -> CliResult {
    let settings = Settings::load(config.as_deref())?;
    crate::telemetry::init(&settings.log);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn demo() -> CliResult {
    crate::telemetry::init(&crate::demo::quiet_logs());
    let options = crate::demo::DemoOptions::default();
    actix_web::rt::System::new()
        .block_on(async move { crate::demo::run(&mut std::io::stdout(), &options).await })?;
    Ok(())
}

fn simulate_azure(args: crate::simulator::SimulateAzureArgs) -> CliResult {
    actix_web::rt::System::new().block_on(crate::simulator::serve_cli(args))?;
    Ok(())
}

fn bench(args: &crate::bench::BenchArgs, config: Option<PathBuf>) -> CliResult {
    crate::bench::run_cli(args, config.as_deref())?;
    Ok(())
}

fn migrate(config: Option<PathBuf>) -> CliResult {
    let settings = Settings::load(config.as_deref())?;
    crate::telemetry::init(&settings.log);
    Db::connect(settings.database.url.expose(), 1)?;
    println!("database is up to date");
    Ok(())
}
