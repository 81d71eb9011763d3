ALTER TABLE tasks DROP COLUMN retry_backoff_ms;
ALTER TABLE tasks DROP COLUMN retry_max;
ALTER TABLE tasks DROP COLUMN timeout_ms;
