//! Scale-out (DESIGN §1, §10): several replicas of the service on one database share the work
//! through leases. No step is done twice, a callback may reach any replica, and the work of a
//! replica that dies is taken over when its leases expire, without sending anything twice.

use futures_util::future::join_all;
use serde_json::json;

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

/// Replicas started at once on fresh databases. Whether two of them meet while creating the
/// schema or the generated secret is a matter of timing: several databases make it likely.
const FRESH_DATABASES: usize = 5;

on_both_backends!(replicas_started_together_on_a_fresh_database_agree);
async fn replicas_started_together_on_a_fresh_database_agree(db: TestDb) {
    let backend = db.backend;
    let mut dbs = vec![db];
    dbs.extend((1..FRESH_DATABASES).map(|_| TestDb::new(backend).unwrap()));
    let one_task = descriptor(json!({"dev": [fake_task("build", json!({}))]}));
    join_all(dbs.iter().map(|db| {
        let one_task = &one_task;
        async move {
            let executor = FakeExecutor::start().await;
            // Neither the schema nor the generated callback secret may be created twice.
            let replicas =
                join_all((0..3).map(|_| spawn_app(test_settings(db, Some(&executor.address)))))
                    .await;
            replicas[0].put_descriptor("p0", "1.0.0", one_task).await;
            let id = replicas[1].start_activity("p0", "1.0.0", "dev").await;
            let task = executor.wait_for(1).await.remove(0);
            // Every replica accepts the token the dispatching one minted (a replayed callback is
            // harmless; a token signed with another secret would be 401).
            for app in &replicas {
                let answer = app.call_back(&task.callback_ref, None).await;
                assert_eq!(answer.status, 200, "{answer:?}");
            }
            replicas[2].wait_for_activity(id, "PROCESSED").await;
            join_all(replicas.into_iter().map(TestApp::stop)).await;
        }
    }))
    .await;
}
