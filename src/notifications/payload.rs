//! The event ODM sends (`{id, type, entityId, beforeState, afterState, time}`), with the
//! `afterState` shapes of DESIGN §9: activities and tasks as the API returns them
//! (`crate::resources`). Built in the transaction of the change, from the rows as it left them.

use std::collections::HashMap;

use diesel::QueryResult;
use serde_json::{json, Value};

use crate::db::models::{ActivityRow, LifecycleRow, TaskRow};
use crate::db::{self, DbConnection};
use crate::domain::{ActivityId, ActivityStatus, Event, EventType, TaskId, TaskStatus};
use crate::resources::{ActivityResource, LifecycleResource, TaskResource};

/// The rows one transaction's events are built from, each read once.
#[derive(Default)]
pub struct EventRows {
    activities: HashMap<ActivityId, Option<ActivityRow>>,
    tasks: HashMap<TaskId, Option<TaskRow>>,
}

impl EventRows {
    /// The event as stored in the outbox: without its `id` (the row's) and, when it carries
    /// one, with `dataProductVersion: null` (the descriptor is read when it is sent). `None`
    /// when its rows are gone.
    pub fn event_body(
        &mut self,
        conn: &mut DbConnection,
        event: &Event,
        now: i64,
    ) -> QueryResult<Option<Value>> {
        let Some(activity) = self.activity(conn, event.activity)? else {
            return Ok(None);
        };
        let task = match event.task {
            Some(id) => match self.task(conn, id)? {
                Some(task) => Some(task),
                None => return Ok(None),
            },
            None => None,
        };
        let transition = match event.event_type {
            EventType::StageTransition => db::lifecycle_before(conn, event.activity)?,
            _ => None,
        };
        let after = after_state(
            event.event_type,
            &activity,
            task.as_ref(),
            transition
                .as_ref()
                .map(|(new, previous)| (new, previous.as_ref())),
        );
        Ok(Some(event_body(event, after, now)))
    }

    fn activity(
        &mut self,
        conn: &mut DbConnection,
        id: ActivityId,
    ) -> QueryResult<Option<ActivityRow>> {
        if let Some(row) = self.activities.get(&id) {
            return Ok(row.clone());
        }
        let row = db::find_activity(conn, id)?;
        self.activities.insert(id, row.clone());
        Ok(row)
    }

    fn task(&mut self, conn: &mut DbConnection, id: TaskId) -> QueryResult<Option<TaskRow>> {
        if let Some(row) = self.tasks.get(&id) {
            return Ok(row.clone());
        }
        let row = db::find_task(conn, id)?;
        self.tasks.insert(id, row.clone());
        Ok(row)
    }
}

/// `{type, entityId, beforeState: null, afterState, time}`.
pub fn event_body(event: &Event, after: Value, now: i64) -> Value {
    let entity = event.task.map_or(event.activity.get(), |t| t.get());
    json!({
        "type": event.event_type.as_str(),
        "entityId": entity.to_string(),
        "beforeState": null,
        "afterState": after,
        "time": now,
    })
}

fn after_state(
    event_type: EventType,
    activity: &ActivityRow,
    task: Option<&TaskRow>,
    transition: Option<(&LifecycleRow, Option<&LifecycleRow>)>,
) -> Value {
    let activity_json = || json!(ActivityResource::from(activity.clone()));
    let task_json = || task.map_or(Value::Null, |t| json!(TaskResource::from(t.clone())));
    let lifecycle = |l: Option<&LifecycleRow>| {
        l.map_or(Value::Null, |l| json!(LifecycleResource::from(l.clone())))
    };
    match event_type {
        EventType::ActivityCreated | EventType::ActivityStarted | EventType::ActivityCompleted => {
            json!({"activity": activity_json(), "dataProductVersion": null})
        }
        EventType::TaskCreated | EventType::TaskStarted | EventType::TaskCompleted => {
            json!({"task": task_json()})
        }
        EventType::TaskResults => json!({"task": task_json(), "activity": activity_json()}),
        EventType::ActivityResults => json!({"activity": activity_json()}),
        EventType::StageTransition => json!({
            "lifecycle": lifecycle(transition.map(|(new, _)| new)),
            "previousLifecycle": lifecycle(transition.and_then(|(_, previous)| previous)),
            "activity": activity_json(),
        }),
    }
}

/// An event of `event_type` as a listener would get it, with every field filled: what a webhook
/// template is tried on at start.
pub fn sample_event(event_type: EventType) -> Value {
    let at = 1_700_000_000_000;
    let activity = ActivityRow {
        id: ActivityId(1),
        data_product_id: "urn:org:dataproduct:sample".into(),
        data_product_version: "1.0.0".into(),
        stage: "dev".into(),
        status: ActivityStatus::Processed,
        results: Some(r#"{"task1":{"url":"https://example.org"}}"#.into()),
        errors: None,
        sealed_secrets: None,
        created_at: at,
        started_at: Some(at),
        finished_at: Some(at),
    };
    let task = TaskRow {
        id: TaskId(1),
        activity_id: ActivityId(1),
        position: 1,
        name: "deploy".into(),
        description: Some("a sample task".into()),
        executor_ref: Some("azure-devops".into()),
        template: Some(r#"{"organization":"org","project":"p","pipelineId":1}"#.into()),
        configurations: Some(r#"{"params":{}}"#.into()),
        status: TaskStatus::Processed,
        results: Some(r#"{"url":"https://example.org"}"#.into()),
        errors: None,
        created_at: at,
        started_at: Some(at),
        finished_at: Some(at),
        attempt: 1,
        run_url: None,
        step: None,
    };
    let lifecycle = |id, stage: &str, finished| LifecycleRow {
        id,
        data_product_id: activity.data_product_id.clone(),
        data_product_version: activity.data_product_version.clone(),
        stage: stage.into(),
        activity_id: Some(ActivityId(id)),
        results: None,
        started_at: at,
        finished_at: finished,
    };
    let (new, previous) = (lifecycle(2, "dev", None), lifecycle(1, "init", Some(at)));
    let event = Event {
        event_type,
        activity: ActivityId(1),
        task: event_type.is_about_a_task().then_some(TaskId(1)),
    };
    let mut body = event_body(
        &event,
        after_state(
            event_type,
            &activity,
            Some(&task),
            Some((&new, Some(&previous))),
        ),
        at,
    );
    body["id"] = json!(1);
    if event_type.carries_descriptor() {
        body["afterState"]["dataProductVersion"] = json!({
            "dataProductDescriptor": "1.0.0",
            "info": {"fullyQualifiedName": activity.data_product_id, "version": "1.0.0"},
        });
    }
    body
}
