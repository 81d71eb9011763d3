//! `odm-devops simulate-azure`: the simulator alone, until Ctrl-C.

use std::path::{Path, PathBuf};

use super::{Simulator, SimulatorConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateAzureArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub bind: String,
    /// JSON or YAML file with credentials, pipelines and their behaviour (the `SimulatorConfig`
    /// shape). Without it, the pipelines of examples/azure-pipelines are declared.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long a run takes when its pipeline does not say, in milliseconds.
    #[arg(long)]
    pub default_delay_ms: Option<u64>,
    /// Directory (tenant) id expected in the token route.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub client_id: Option<String>,
    /// The client secret the token route accepts.
    #[arg(long, env = "ODM_SIM_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// A personal access token to accept (repeat for several).
    #[arg(long = "pat")]
    pub pats: Vec<String>,
    /// A federated token (a JWT) the token route accepts as `client_assertion`, for trying
    /// `auth.kind: workload_identity` (repeat for several).
    #[arg(long = "federated-token")]
    pub federated_tokens: Vec<String>,
    /// Lifetime of issued bearer tokens, in seconds.
    #[arg(long)]
    pub token_expires_in_secs: Option<u64>,
    /// HTTP worker threads.
    #[arg(long)]
    pub workers: Option<usize>,
}

pub async fn serve_cli(args: SimulateAzureArgs) -> std::io::Result<()> {
    let mut config = match &args.config {
        Some(path) => load(path)?,
        None => SimulatorConfig::demo(),
    };
    let secret_given = args.client_secret.is_some() || args.config.is_some();
    if let Some(v) = args.default_delay_ms {
        config.default_delay_ms = v;
    }
    if let Some(v) = args.tenant {
        config.tenant = v;
    }
    if let Some(v) = args.client_id {
        config.client_id = v;
    }
    if let Some(v) = args.client_secret {
        config.client_secret = v;
    }
    config.pats.extend(args.pats);
    config.federated_tokens.extend(args.federated_tokens);
    let workload_identity = !config.federated_tokens.is_empty();
    if let Some(v) = args.token_expires_in_secs {
        config.token_expires_in_secs = v;
    }
    if let Some(v) = args.workers {
        config.workers = v;
    }
    let pipelines: Vec<String> = config
        .pipelines
        .iter()
        .map(|p| format!("{}/{}/{}", p.organization, p.project, p.id))
        .collect();
    let client_id = config.client_id.clone();
    // The built-in secret is a fixed test value; a secret someone chose is never printed.
    let secret_hint = if secret_given {
        "<the one you configured>".to_owned()
    } else {
        config.client_secret.clone()
    };
    let handle = Simulator::start_on(config, &args.bind).await?;
    println!("Azure DevOps simulator listening on {}", handle.base_url());
    println!("  pipelines: {}", pipelines.join(", "));
    println!("  control routes under {}/_sim/", handle.base_url());
    println!("  executor settings:");
    println!(
        "    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__BASE_URL={}",
        handle.base_url()
    );
    println!(
        "    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__TOKEN_URL={}",
        handle.token_url()
    );
    println!("    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_ID={client_id}");
    println!("    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET={secret_hint}");
    if workload_identity {
        println!(
            "  or, without a secret (workload identity): the same BASE_URL, TOKEN_URL and \
             CLIENT_ID, no CLIENT_SECRET, and"
        );
        println!("    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__KIND=workload_identity");
        println!("    ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__TOKEN_FILE=<a file holding one of the federated tokens>");
    }
    actix_web::rt::signal::ctrl_c().await?;
    handle.stop().await;
    Ok(())
}

/// `.json` as JSON; anything else as YAML (which also reads JSON).
pub fn load(path: &Path) -> std::io::Result<SimulatorConfig> {
    let invalid = |e: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("simulator config {}: {e}", path.display()),
        )
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let text = std::fs::read(path)?;
        return serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()));
    }
    if !path.exists() {
        return Err(invalid("no such file".into()));
    }
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_files_load_with_their_case_kept() {
        let dir = std::env::temp_dir().join(format!("odm-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("sim.yaml");
        std::fs::write(
            &yaml,
            "clientSecret: s\npats: [p1]\npipelines:\n  - organization: Org\n    project: My Project\n    id: 3\n    parameters: [vmName, {name: callbackRef, required: true}]\n    behaviour: {delayMs: 5, result: failed, errors: \"bad ${{ parameters.vmName }}\"}\n",
        )
        .unwrap();
        let config = load(&yaml).unwrap();
        assert_eq!(config.client_secret, "s");
        let pipeline = &config.pipelines[0];
        assert_eq!(pipeline.parameters[0].name(), "vmName");
        assert!(pipeline.parameters[1].required());
        assert_eq!(pipeline.behaviour.delay_ms, Some(5));
        let json = dir.join("sim.json");
        std::fs::write(&json, r#"{"tenant": "t", "unknown": 1}"#).unwrap();
        let err = load(&json).unwrap_err().to_string();
        assert!(err.contains("unknown field `unknown`"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
