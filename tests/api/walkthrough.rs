//! The README's walk-through, from the same example files, so the documentation stays true.

use odm_devops::config::{AzureAuthSettings, ExecutorSettings, Settings};
use odm_devops::simulator::{load_config, Simulator};
use serde_json::{json, Value};

use crate::helpers::*;

fn example(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/walkthrough")
        .join(file)
}

#[actix_web::test]
async fn the_readme_walk_through_works() {
    let simulator = Simulator::start(load_config(&example("simulator.yaml")).unwrap())
        .await
        .unwrap();
    let db = TestDb::new(Backend::Sqlite).unwrap();
    // The secret from the environment, as the README's command gives it.
    let secret = (
        "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET".to_owned(),
        "sim-secret".to_owned(),
    );
    let mut settings =
        Settings::load_with_env(Some(&example("odm-devops.yaml")), [secret]).unwrap();
    // The same files, on free ports and a test database instead of :8090, :8002 and data/.
    let ExecutorSettings::AzureDevops(azure) = settings.executors.get_mut("azure-devops").unwrap()
    else {
        panic!("the example configures azure-devops");
    };
    azure.base_url = simulator.base_url();
    let AzureAuthSettings::ClientCredentials(auth) = &mut azure.auth else {
        panic!("client credentials")
    };
    auth.token_url = simulator.token_url();
    let test = test_settings(&db, None);
    (settings.server, settings.database) = (test.server, test.database);
    let app = spawn_app(settings).await;

    let descriptor: Value =
        serde_json::from_str(&std::fs::read_to_string(example("descriptor.json")).unwrap())
            .unwrap();
    app.put_descriptor("sales", "1.0.0", &descriptor).await;
    let id = app.start_activity("sales", "1.0.0", "dev").await;
    let run = eventually("the pipeline run", || async {
        simulator.runs().into_iter().next()
    })
    .await;
    let answer = app
        .call_back(
            &run.template_parameters["callbackRef"],
            Some(json!({"status": "PROCESSED", "results": {"url": "https://sales-dev.example"}})),
        )
        .await;
    assert_eq!(answer.json(), json!({"status": "PROCESSED"}));
    app.wait_for_activity(id, "PROCESSED").await;
    let current = app
        .get(&format!("{DEVOPS}/lifecycles/sales/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "dev");
    assert_eq!(
        current["results"],
        r#"{"task1":{"url":"https://sales-dev.example"}}"#
    );
    app.stop().await;
    simulator.stop().await;
}

/// The walk-through's two commands in one shell: `ODM_DEVOPS_CONFIG` exported for the service
/// names the service's settings, never the simulator's file (it stopped the simulator with
/// "unknown field `executors`").
#[test]
fn the_service_s_config_variable_is_not_the_simulator_s_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut simulator = std::process::Command::new(env!("CARGO_BIN_EXE_odm-devops"))
        .args(["simulate-azure", "--bind", &format!("127.0.0.1:{port}")])
        .env("ODM_DEVOPS_CONFIG", example("odm-devops.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listening = loop {
        if let Some(status) = simulator.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut simulator.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("the simulator stopped ({status}): {stderr}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    simulator.kill().unwrap();
    simulator.wait().unwrap();
    assert!(listening, "the simulator never listened on {port}");
}
