-- A task's run settings (configurations.timeout and .retry) as columns, read once at creation:
-- deciding a task's deadline or retry never parses configurations again. And the planned
-- configurations kept from creation on (they were copied at the first dispatch), so a dispatch
-- never rewrites them.
ALTER TABLE tasks ADD COLUMN timeout_ms BIGINT;
ALTER TABLE tasks ADD COLUMN retry_max INTEGER;
ALTER TABLE tasks ADD COLUMN retry_backoff_ms BIGINT;

-- Tasks not yet finished keep their settings across the upgrade. Values that do not read as
-- settings are left out, as the engine ignored them before; so are those over today's caps
-- (a timeout of 30 days, a backoff of an hour), which creation refuses.
UPDATE tasks SET planned_configurations = configurations
 WHERE planned_configurations IS NULL AND status IN ('PLANNED', 'PROCESSING');
UPDATE tasks AS t SET
    timeout_ms = CASE
        WHEN jsonb_typeof(s.c -> 'timeout') = 'number'
         AND (s.c ->> 'timeout')::float8 > 0 AND (s.c ->> 'timeout')::float8 <= 2592000
        THEN trunc((s.c ->> 'timeout')::float8 * 1000)::bigint
    END,
    retry_max = CASE
        WHEN jsonb_typeof(s.c -> 'retry' -> 'max') = 'number'
         AND (s.c -> 'retry' ->> 'max')::numeric BETWEEN 0 AND 10
         AND (s.c -> 'retry' ->> 'max')::numeric = trunc((s.c -> 'retry' ->> 'max')::numeric)
        THEN (s.c -> 'retry' ->> 'max')::numeric::integer
    END,
    retry_backoff_ms = CASE
        WHEN jsonb_typeof(s.c -> 'retry' -> 'backoff') = 'number'
         AND (s.c -> 'retry' ->> 'backoff')::float8 BETWEEN 0 AND 3600
        THEN trunc((s.c -> 'retry' ->> 'backoff')::float8 * 1000)::bigint
        WHEN jsonb_typeof(s.c -> 'retry' -> 'backoff') IS NOT NULL
         AND jsonb_typeof(s.c -> 'retry' -> 'backoff') <> 'null'
        THEN NULL
        ELSE 30000
    END
FROM (SELECT id, planned_configurations::jsonb AS c FROM tasks
       WHERE status IN ('PLANNED', 'PROCESSING') AND planned_configurations IS NOT NULL) AS s
WHERE t.id = s.id AND jsonb_typeof(s.c) = 'object';
UPDATE tasks SET retry_max = NULL, retry_backoff_ms = NULL
 WHERE retry_max IS NULL OR retry_backoff_ms IS NULL;
