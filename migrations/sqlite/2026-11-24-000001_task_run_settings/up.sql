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
UPDATE tasks SET
    timeout_ms = CASE
        WHEN json_type(planned_configurations, '$.timeout') IN ('integer', 'real')
         AND json_extract(planned_configurations, '$.timeout') > 0
         AND json_extract(planned_configurations, '$.timeout') <= 2592000
        THEN CAST(json_extract(planned_configurations, '$.timeout') * 1000 AS INTEGER)
    END,
    retry_max = CASE
        WHEN json_type(planned_configurations, '$.retry.max') = 'integer'
         AND json_extract(planned_configurations, '$.retry.max') BETWEEN 0 AND 10
        THEN json_extract(planned_configurations, '$.retry.max')
    END,
    retry_backoff_ms = CASE
        WHEN json_type(planned_configurations, '$.retry.backoff') IN ('integer', 'real')
         AND json_extract(planned_configurations, '$.retry.backoff') BETWEEN 0 AND 3600
        THEN CAST(json_extract(planned_configurations, '$.retry.backoff') * 1000 AS INTEGER)
        WHEN json_type(planned_configurations, '$.retry.backoff') IS NOT NULL
         AND json_type(planned_configurations, '$.retry.backoff') <> 'null'
        THEN NULL
        ELSE 30000
    END
 WHERE status IN ('PLANNED', 'PROCESSING') AND json_valid(planned_configurations)
   AND json_type(planned_configurations) = 'object';
UPDATE tasks SET retry_max = NULL, retry_backoff_ms = NULL
 WHERE retry_max IS NULL OR retry_backoff_ms IS NULL;
