-- The executor API (ODM's executor protocol): which Azure DevOps run each ODM task started, and
-- what Azure last said about it. Keyed by the caller's task id (another server's ids).
CREATE TABLE executor_runs (
    task_id BIGINT PRIMARY KEY NOT NULL,
    -- SHA-256 of the run request (callbackRef, template, configurations): the same again is a
    -- replay, anything else for this task id a conflict.
    fingerprint TEXT NOT NULL,
    organization TEXT NOT NULL,
    project TEXT NOT NULL,
    pipeline_id INTEGER NOT NULL,
    run_id INTEGER,
    run_url TEXT,
    -- submitting (the run request is under way), refused (no run: errors says why),
    -- unconfirmed (the request may have created a run, its id is unknown), or Azure's run state
    -- (inProgress, canceling, completed, unknown).
    state TEXT NOT NULL,
    result TEXT,
    errors TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
