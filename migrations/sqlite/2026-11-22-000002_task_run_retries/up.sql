-- Retries of failed runs (configurations.retry): how many runs of the task failed so far, and
-- the configurations as planned, which each new run resolves again (the stored ones are resolved).
ALTER TABLE tasks ADD COLUMN runs_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN planned_configurations TEXT;
