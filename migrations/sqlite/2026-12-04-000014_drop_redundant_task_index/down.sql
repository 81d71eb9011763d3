CREATE INDEX tasks_by_activity ON tasks (activity_id);
