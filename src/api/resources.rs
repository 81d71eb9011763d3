//! ODM's wire format: the resources of activities, tasks and lifecycles (`crate::resources`,
//! shared with the notifications) and the `{"status": …}` answer.

use serde::Serialize;

pub use crate::resources::{ActivityResource, LifecycleResource, TaskResource};

#[derive(Debug, Serialize)]
pub struct StatusResource {
    pub status: String,
}

impl StatusResource {
    pub fn of(status: impl ToString) -> StatusResource {
        StatusResource {
            status: status.to_string(),
        }
    }
}
