-- DESIGN §9: one row per (event, listener), written in the transaction of the change it reports.
-- activity_id groups an activity's events and its tasks' (delivered in id order per listener);
-- payload is the event as sent, without its id (the row's) and, for the activity events that
-- carry it, without the descriptor (read from the registry when the row is sent).
CREATE TABLE notification_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    listener TEXT NOT NULL,
    event_type TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    activity_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    delivered_at BIGINT
);
-- The engine's claims and the per-entity order read undelivered rows only.
CREATE INDEX notification_outbox_pending
    ON notification_outbox (listener, activity_id, id) WHERE delivered_at IS NULL;
-- Pruning after notifications.keep_days.
CREATE INDEX notification_outbox_delivered
    ON notification_outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- An ODM observer event deleted a product (version): its activities are deleted once the runs
-- their abort cancels are cancelled (the cancel step needs the task rows). Activities created
-- after the request (id above up_to_activity) are not touched.
CREATE TABLE activity_deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data_product_id TEXT NOT NULL,
    data_product_version TEXT,
    up_to_activity BIGINT NOT NULL,
    requested_at BIGINT NOT NULL
);
