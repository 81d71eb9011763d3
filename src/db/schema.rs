// One schema for SQLite and PostgreSQL: only types both map the same way (BigInt, Integer, Text).

diesel::table! {
    activities (id) {
        id -> BigInt,
        data_product_id -> Text,
        data_product_version -> Text,
        stage -> Text,
        status -> Text,
        results -> Nullable<Text>,
        errors -> Nullable<Text>,
        sealed_secrets -> Nullable<Text>,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        activity_id -> BigInt,
        position -> Integer,
        name -> Text,
        description -> Nullable<Text>,
        executor_ref -> Nullable<Text>,
        template -> Nullable<Text>,
        configurations -> Nullable<Text>,
        status -> Text,
        results -> Nullable<Text>,
        errors -> Nullable<Text>,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        attempt -> Integer,
        run_ref -> Nullable<Text>,
        run_url -> Nullable<Text>,
        step -> Nullable<Text>,
        due_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        deadline_at -> Nullable<BigInt>,
        step_attempts -> Integer,
        reported_outcome -> Nullable<Text>,
        runs_failed -> Integer,
        planned_configurations -> Nullable<Text>,
        timeout_ms -> Nullable<BigInt>,
        retry_max -> Nullable<Integer>,
        retry_backoff_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    lifecycles (id) {
        id -> BigInt,
        data_product_id -> Text,
        data_product_version -> Text,
        stage -> Text,
        activity_id -> Nullable<BigInt>,
        results -> Nullable<Text>,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    descriptors (data_product_id, version) {
        data_product_id -> Text,
        version -> Text,
        content -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    service_meta (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    notification_outbox (id) {
        id -> BigInt,
        listener -> Text,
        event_type -> Text,
        entity_id -> BigInt,
        activity_id -> BigInt,
        payload -> Text,
        created_at -> BigInt,
        due_at -> BigInt,
        attempts -> Integer,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    activity_deletions (id) {
        id -> BigInt,
        data_product_id -> Text,
        data_product_version -> Nullable<Text>,
        up_to_activity -> BigInt,
        requested_at -> BigInt,
    }
}

diesel::joinable!(tasks -> activities (activity_id));
diesel::allow_tables_to_appear_in_same_query!(
    activities,
    tasks,
    lifecycles,
    descriptors,
    service_meta,
    notification_outbox,
    activity_deletions
);

diesel::table! {
    executor_runs (task_id) {
        task_id -> BigInt,
        fingerprint -> Text,
        organization -> Text,
        project -> Text,
        pipeline_id -> Integer,
        run_id -> Nullable<Integer>,
        run_url -> Nullable<Text>,
        state -> Text,
        result -> Nullable<Text>,
        errors -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}
