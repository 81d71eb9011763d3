//! Reads for the REST API.

use super::error::CommandError;
use super::service::LifecycleService;
use crate::db::models::{ActivityRow, LifecycleRow, TaskRow};
use crate::db::{
    self, ActivityFilter, LifecycleFilter, NotificationFilter, NotificationRow, TaskFilter,
};
use crate::domain::{ActivityId, TaskId};

impl LifecycleService {
    /// The outbox rows, for `GET /notifications`.
    pub async fn notifications(
        &self,
        filter: NotificationFilter,
    ) -> Result<Vec<NotificationRow>, CommandError> {
        self.db
            .read(move |conn| Ok(db::list_notifications(conn, &filter)?))
            .await
    }

    pub async fn activity(&self, id: ActivityId) -> Result<ActivityRow, CommandError> {
        self.db
            .read(move |conn| {
                db::find_activity(conn, id)?.ok_or(CommandError::ActivityNotFound(id))
            })
            .await
    }

    pub async fn activities(
        &self,
        filter: ActivityFilter,
    ) -> Result<Vec<ActivityRow>, CommandError> {
        self.db
            .read(move |conn| Ok(db::list_activities(conn, &filter)?))
            .await
    }

    pub async fn task(&self, id: TaskId) -> Result<TaskRow, CommandError> {
        self.db
            .read(move |conn| db::find_task(conn, id)?.ok_or(CommandError::TaskNotFound(id)))
            .await
    }

    pub async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRow>, CommandError> {
        self.db
            .read(move |conn| Ok(db::list_tasks(conn, &filter)?))
            .await
    }

    pub async fn lifecycles(
        &self,
        filter: LifecycleFilter,
    ) -> Result<Vec<LifecycleRow>, CommandError> {
        self.db
            .read(move |conn| Ok(db::list_lifecycles(conn, &filter)?))
            .await
    }

    pub async fn current_lifecycle(
        &self,
        product: String,
        version: String,
    ) -> Result<Option<LifecycleRow>, CommandError> {
        self.db
            .read(move |conn| Ok(db::current_lifecycle(conn, &product, &version)?))
            .await
    }
}
