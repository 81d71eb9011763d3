//! Secrets at rest (DESIGN §14): sealed for their activity alone, with `secrets.key` when it is
//! given; what happens to sealed secrets when the key changes or was sealed by an earlier version.

use odm_devops::db::{self, Db, DbError};
use odm_devops::domain::ActivityId;
use odm_devops::secret::Secret;
use serde_json::json;

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

const SECRET_HEADER: &str = "x-odm-fake-executor-secret-token";

fn keyed_settings(
    db: &TestDb,
    executor: &FakeExecutor,
    sealing_key: Option<&str>,
    callback_secret: &str,
) -> odm_devops::config::Settings {
    let mut settings = test_settings(db, Some(&executor.address));
    settings.secrets.key = sealing_key.map(Secret::new);
    settings.callbacks.secret = Some(Secret::new(callback_secret));
    settings
}

impl TestApp {
    /// Creates a PLANNED activity of product `p` version 1, with the fake executor's token
    /// secret when given; its id.
    async fn planned_with(&self, stage: &str, secret: Option<&str>) -> i64 {
        let body = json!({"dataProductId": "p", "dataProductVersion": "1", "stage": stage});
        let headers: Vec<(&str, &str)> = secret.map(|s| (SECRET_HEADER, s)).into_iter().collect();
        let answer = self
            .send(
                "POST",
                &format!("{DEVOPS}/activities"),
                Some(("application/json", body.to_string())),
                &headers,
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["id"].as_i64().unwrap()
    }

    /// Starts `id` and waits for its only task to fail; its errors.
    async fn start_and_fail(&self, id: i64) -> String {
        assert_eq!(self.start_planned(id).await.status, 200);
        self.wait_for_activity(id, "FAILED").await;
        self.tasks_of(id).await[0]["errors"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn put_two_stages(app: &TestApp) {
    let lifecycle =
        json!({"dev": [fake_task("t", json!({}))], "test": [fake_task("t", json!({}))]});
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
}

async fn sealed_of(db: &TestDb, id: i64) -> Option<String> {
    let direct = Db::connect(&db.url, 1).unwrap();
    direct
        .read(move |conn| Ok::<_, DbError>(db::find_activity(conn, ActivityId(id))?))
        .await
        .unwrap()
        .unwrap()
        .sealed_secrets
}

async fn set_sealed(db: &TestDb, id: i64, sealed: Option<String>) {
    let direct = Db::connect(&db.url, 1).unwrap();
    direct
        .write(move |conn| {
            Ok::<_, DbError>(db::set_sealed_secrets(
                conn,
                ActivityId(id),
                sealed.as_deref(),
            )?)
        })
        .await
        .unwrap();
}

on_both_backends!(a_sealed_blob_moved_to_another_activity_does_not_open);
async fn a_sealed_blob_moved_to_another_activity_does_not_open(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    put_two_stages(&app).await;
    let owner = app.planned_with("dev", Some("s3cr3t-value")).await;
    let other = app.planned_with("test", None).await;
    // Someone with write access to the database copies the sealed secrets to their activity.
    set_sealed(&db, other, sealed_of(&db, owner).await).await;

    let errors = app.start_and_fail(other).await;
    assert!(errors.contains("sealed for another activity"), "{errors}");
    assert!(!errors.contains("s3cr3t"), "{errors}");
    assert!(executor.received().is_empty(), "nothing was sent");

    assert_eq!(app.start_planned(owner).await.status, 200);
    let received = executor.wait_for(1).await.remove(0);
    assert_eq!(
        received.headers.get("x-odm-token").map(String::as_str),
        Some("s3cr3t-value"),
        "the owner's secrets open for the owner"
    );
    app.stop().await;
}

on_both_backends!(secrets_key_alone_seals_and_a_changed_key_fails_the_task_saying_so);
async fn secrets_key_alone_seals_and_a_changed_key_fails_the_task_saying_so(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(keyed_settings(&db, &executor, Some("key-one"), "cb-one")).await;
    put_two_stages(&app).await;
    let first = app.planned_with("dev", Some("first-secret")).await;
    let second = app.planned_with("test", Some("second-secret")).await;
    app.stop().await;

    // Another sealing key, same callback secret: the sealed secrets cannot be opened.
    let app = spawn_app(keyed_settings(&db, &executor, Some("key-two"), "cb-one")).await;
    let errors = app.start_and_fail(first).await;
    assert!(errors.contains("the sealing key changed"), "{errors}");
    assert!(errors.contains("secrets.key"), "{errors}");
    app.stop().await;

    // The same sealing key with another callback secret: sealing depends on secrets.key alone.
    let app = spawn_app(keyed_settings(&db, &executor, Some("key-one"), "cb-two")).await;
    assert_eq!(app.start_planned(second).await.status, 200);
    let received = executor.wait_for(1).await.remove(0);
    assert_eq!(
        received.headers.get("x-odm-token").map(String::as_str),
        Some("second-secret")
    );
    app.stop().await;
}

on_both_backends!(secrets_sealed_by_an_earlier_version_fail_the_task_saying_so);
async fn secrets_sealed_by_an_earlier_version_fail_the_task_saying_so(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    put_two_stages(&app).await;
    let id = app.planned_with("dev", Some("s3cr3t-value")).await;
    let sealed = sealed_of(&db, id).await.expect("sealed");
    // Before sealing bound the activity, a blob was bare base64 (no `v2.` prefix).
    let unbound = sealed
        .strip_prefix("v2.")
        .expect("the current format")
        .to_owned();
    set_sealed(&db, id, Some(unbound)).await;
    let errors = app.start_and_fail(id).await;
    assert!(
        errors.contains("sealed by an earlier version of odm-devops"),
        "{errors}"
    );
    assert!(errors.contains("create a new activity"), "{errors}");
    assert!(executor.received().is_empty());
    app.stop().await;
}
