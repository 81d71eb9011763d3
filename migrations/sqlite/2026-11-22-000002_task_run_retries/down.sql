ALTER TABLE tasks DROP COLUMN planned_configurations;
ALTER TABLE tasks DROP COLUMN runs_failed;
