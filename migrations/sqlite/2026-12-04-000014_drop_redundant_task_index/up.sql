-- tasks_by_activity (activity_id) duplicated the leading column of UNIQUE (activity_id, position),
-- whose index serves every lookup of an activity's tasks (and ON DELETE CASCADE) as well. It
-- cost an index entry on every task insert and on every task update that cannot be HOT (issue
-- 15's profile: nearly all of them, as the step and due time are indexed): ~7 % of the WAL a
-- task writes on PostgreSQL.
DROP INDEX IF EXISTS tasks_by_activity;
