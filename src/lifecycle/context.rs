//! The Context a task receives (DESIGN §4): one entry per stage of the product version — the
//! latest PROCESSED activity of each stage, and the running one as `RUNNING`.

use std::collections::{BTreeMap, HashMap};

use diesel::QueryResult;
use serde_json::{json, Map, Value};

use crate::clock::format_ms;
use crate::db::{self, DbConnection};
use crate::domain::{ActivityId, ActivityKeys};
use crate::placeholders::StageTaskNames;

pub struct TaskContext {
    pub context: Value,
    pub names: StageTaskNames,
}

pub fn load(conn: &mut DbConnection, current: &ActivityKeys) -> QueryResult<TaskContext> {
    let rows = db::context_rows(
        conn,
        &current.data_product_id,
        &current.data_product_version,
        current.id,
    )?;
    Ok(of_rows(rows, current))
}

/// The Contexts of `currents` from their rows read together (`db::contexts_of`,
/// `db::handed_steps_with_contexts`), by activity.
pub fn of_each<'a>(
    mut rows: HashMap<ActivityId, db::ContextRows>,
    currents: impl IntoIterator<Item = &'a ActivityKeys>,
) -> HashMap<ActivityId, TaskContext> {
    currents
        .into_iter()
        .filter_map(|current| {
            let of_current = rows.remove(&current.id)?;
            Some((current.id, of_rows(of_current, current)))
        })
        .collect()
}

/// The Context of `current` from its rows.
pub fn of_rows(rows: db::ContextRows, current: &ActivityKeys) -> TaskContext {
    let db::ContextRows {
        activities: rows,
        task_names,
    } = rows;
    // Rows come oldest first, so a later PROCESSED activity of a stage replaces an earlier one;
    // the running activity is written last and wins over any of its stage.
    let mut stages: BTreeMap<String, (ActivityId, Value)> = BTreeMap::new();
    let (running, processed): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.id == current.id);
    for row in processed.into_iter().chain(running) {
        let status = if row.id == current.id {
            "RUNNING".to_owned()
        } else {
            row.status.to_string()
        };
        let entry = json!({
            "status": status,
            "finishedAt": row.finished_at.map(format_ms),
            "results": row.results.and_then(|r| serde_json::from_str::<Value>(&r).ok()),
        });
        stages.insert(row.stage, (row.id, entry));
    }
    let stage_of: BTreeMap<ActivityId, String> =
        stages.iter().map(|(s, (id, _))| (*id, s.clone())).collect();
    let names = stage_names(task_names, &stage_of);
    let context = Value::Object(
        stages
            .into_iter()
            .map(|(stage, (_, entry))| (stage, entry))
            .collect::<Map<_, _>>(),
    );
    TaskContext { context, names }
}

/// The context a task of a new activity of `stage` would be given if that activity started now
/// (a dry run): the stored stages as `load` reads them, and `stage` itself RUNNING with no
/// results yet, its task names those of the new activity (`own_names`, position order).
pub fn load_for_new(
    conn: &mut DbConnection,
    data_product_id: &str,
    data_product_version: &str,
    stage: &str,
    own_names: &[String],
) -> QueryResult<TaskContext> {
    let nothing_stored = ActivityKeys {
        // No stored activity has id 0: only PROCESSED ones are read.
        id: ActivityId(0),
        data_product_id: data_product_id.to_owned(),
        data_product_version: data_product_version.to_owned(),
        stage: stage.to_owned(),
        sealed_secrets: None,
    };
    let mut loaded = load(conn, &nothing_stored)?;
    if let Value::Object(stages) = &mut loaded.context {
        stages.insert(
            stage.to_owned(),
            json!({"status": "RUNNING", "finishedAt": null, "results": null}),
        );
    }
    loaded.names.add_stage(stage, own_names);
    Ok(loaded)
}

/// The task names of each stage's activity in the context, in position order.
fn stage_names(
    rows: Vec<(ActivityId, i32, String)>,
    stage_of: &BTreeMap<ActivityId, String>,
) -> StageTaskNames {
    let mut by_activity: BTreeMap<ActivityId, Vec<(i32, String)>> = BTreeMap::new();
    for (activity_id, position, name) in rows {
        by_activity
            .entry(activity_id)
            .or_default()
            .push((position, name));
    }
    let mut names = StageTaskNames::new();
    for (activity_id, mut tasks) in by_activity {
        if let Some(stage) = stage_of.get(&activity_id) {
            tasks.sort();
            names.add_stage(stage.clone(), tasks.into_iter().map(|(_, name)| name));
        }
    }
    names
}
