use super::*;

fn order() -> Vec<String> {
    ["dev", "test", "prod"].map(String::from).to_vec()
}

#[test]
fn a_stage_starts_after_the_one_before_it_or_later() {
    let order = order();
    for (stage, current) in [
        ("dev", None),
        ("dev", Some("prod")),
        ("test", Some("dev")),
        ("test", Some("test")),
        ("test", Some("prod")),
        ("prod", Some("test")),
        ("prod", Some("prod")),
        ("staging", None),
        ("staging", Some("elsewhere")),
    ] {
        assert_eq!(
            stage_order(&order, stage, current),
            Ok(()),
            "{stage} after {current:?}"
        );
    }
    assert_eq!(stage_order(&[], "prod", None), Ok(()));
}

#[test]
fn a_refusal_names_the_stage_required() {
    let order = order();
    for (stage, current, required) in [
        ("test", None, "dev"),
        ("prod", None, "test"),
        ("prod", Some("dev"), "test"),
        ("prod", Some("sandbox"), "test"),
    ] {
        let refusal = stage_order(&order, stage, current).unwrap_err();
        assert_eq!(refusal.required, required);
        let text = refusal.to_string();
        assert!(text.contains("stage-order"), "{text}");
        assert!(text.contains(&format!("{required} or later")), "{text}");
        assert!(text.contains(current.unwrap_or("none")), "{text}");
    }
}

#[test]
fn the_request_is_odms_with_nulls_and_the_refusal_names_each_blocking_policy() {
    let request = ValidationRequest::new(PolicyEvent::TaskExecutionResult);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        serde_json::json!({
            "resourceType": "TASK_EXECUTION_RESULT",
            "event": "TASK_EXECUTION_RESULT",
            "dataProductId": null,
            "dataProductVersion": null,
            "currentState": null,
            "afterState": null,
            "verbose": true
        })
    );
    let verdict = Verdict {
        blocking: vec![
            FailedPolicy {
                id: Some(7),
                name: "gdpr".into(),
            },
            FailedPolicy {
                id: None,
                name: "owner".into(),
            },
        ],
        advisory: vec![],
    };
    assert_eq!(
        verdict.refusal(PolicyEvent::ActivityStageTransition),
        "blocked by blocking policies of ODM's policy service (ACTIVITY_STAGE_TRANSITION): \
         gdpr (id 7), owner (no id)"
    );
}
