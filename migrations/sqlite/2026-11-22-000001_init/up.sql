-- Times are milliseconds since the Unix epoch (BIGINT on both backends keeps schema.rs portable).
CREATE TABLE activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data_product_id TEXT NOT NULL,
    data_product_version TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    results TEXT,
    errors TEXT,
    sealed_secrets TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
-- DESIGN §2: at most one PROCESSING activity per product version; one PLANNED per stage.
CREATE UNIQUE INDEX activities_one_processing
    ON activities (data_product_id, data_product_version) WHERE status = 'PROCESSING';
CREATE UNIQUE INDEX activities_one_planned
    ON activities (data_product_id, data_product_version, stage) WHERE status = 'PLANNED';
CREATE INDEX activities_by_product ON activities (data_product_id, data_product_version, stage);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    activity_id BIGINT NOT NULL REFERENCES activities (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    executor_ref TEXT,
    template TEXT,
    configurations TEXT,
    status TEXT NOT NULL,
    results TEXT,
    errors TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    attempt INTEGER NOT NULL DEFAULT 0,
    run_ref TEXT,
    run_url TEXT,
    step TEXT,
    due_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    deadline_at BIGINT,
    step_attempts INTEGER NOT NULL DEFAULT 0,
    reported_outcome TEXT,
    UNIQUE (activity_id, position)
);
CREATE INDEX tasks_due ON tasks (due_at) WHERE step IS NOT NULL;
CREATE INDEX tasks_by_activity ON tasks (activity_id);

CREATE TABLE lifecycles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data_product_id TEXT NOT NULL,
    data_product_version TEXT NOT NULL,
    stage TEXT NOT NULL,
    activity_id BIGINT,
    results TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);
-- One current row per product version, and one promotion per activity: exactly once.
CREATE UNIQUE INDEX lifecycles_one_current
    ON lifecycles (data_product_id, data_product_version) WHERE finished_at IS NULL;
CREATE UNIQUE INDEX lifecycles_one_per_activity ON lifecycles (activity_id);

CREATE TABLE descriptors (
    data_product_id TEXT NOT NULL,
    version TEXT NOT NULL,
    content TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (data_product_id, version)
);

CREATE TABLE service_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
