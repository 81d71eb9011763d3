use serde_json::json;

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn with_lifecycle(info: Value) -> Value {
    json!({"dataProductDescriptor": "1.0.0", "internalComponents": {"lifecycleInfo": info}})
}

#[test]
fn stage_map_gives_tasks_in_order_with_names_and_stripped_href() {
    let d = with_lifecycle(json!({
        "dev": [
            {"service": {"$href": "{azure-devops}"},
             "template": {"name": "provision", "description": "Create the VM",
                          "definition": {"organization": "o", "project": "p", "pipelineId": 3}},
             "configurations": {"params": {"size": "S"}}},
            {"service": {"$href": "azure-devops"},
             "template": {"name": "65f81a2f-65d8-3f03-9dff-ba598ba0292c", "definition": {"pipelineId": "4"}}}
        ],
        "prod": [{"template": {"name": " "}}]
    }));
    let info = parse(&d).unwrap();
    assert_eq!(info.stage_list(), "dev, prod");
    let dev = &info.stages["dev"];
    assert_eq!(dev[0].name, "provision");
    assert_eq!(dev[0].description.as_deref(), Some("Create the VM"));
    assert_eq!(dev[0].executor_ref.as_deref(), Some("azure-devops"));
    assert_eq!(
        dev[0].template,
        Some(json!({"organization": "o", "project": "p", "pipelineId": 3}))
    );
    assert_eq!(
        dev[0].configurations,
        Some(json!({"params": {"size": "S"}}))
    );
    assert_eq!(dev[1].position, 2);
    assert_eq!(dev[1].name, "task2", "a UUID is not a name");
    let prod = &info.stages["prod"];
    assert_eq!(prod[0].name, "task1", "a blank name is not a name");
    assert_eq!(prod[0].executor_ref, None);
}

#[test]
fn normalized_shape_takes_definition_and_configurations_from_raw_content() {
    let info = parse(&fixture("odm-dpd-multiple-tasks-normalized.json")).unwrap();
    assert_eq!(
        info.stage_list(),
        "prod, stage-empty, stage-noconf, stage-noservice, stage-notemplate, stage-wrong-executor, test"
    );
    let prod = &info.stages["prod"];
    assert_eq!(prod.len(), 2);
    assert_eq!(prod[0].name, "testPipeline");
    assert_eq!(prod[1].name, "testPipeline2");
    assert_eq!(
        prod[0].template,
        Some(
            json!({"organization": "andreagioia", "project": "opendatamesh", "pipelineId": "3", "branch": "main"})
        )
    );
    assert_eq!(
        info.stages["test"][0].configurations,
        Some(json!({"stagesToSkip": ["Deploy"]}))
    );
    assert_eq!(info.stages["stage-noservice"][0].executor_ref, None);
    assert_eq!(info.stages["stage-noconf"][0].configurations, None);
    assert_eq!(info.stages["stage-notemplate"][0].template, None);
    assert_eq!(
        info.stages["stage-wrong-executor"][0]
            .executor_ref
            .as_deref(),
        Some("wrong-executor")
    );
}

#[test]
fn normalized_tasks_are_ordered_by_order_not_by_list_position() {
    let d = with_lifecycle(json!({
        "stageNames": ["dev", "test"],
        "tasksInfo": [
            {"stageName": "dev", "order": 2, "template": {"name": "second"}},
            {"stageName": "dev", "order": 1, "template": {"name": "first"}}
        ]
    }));
    let info = parse(&d).unwrap();
    let names: Vec<_> = info.stages["dev"]
        .iter()
        .map(|t| (t.position, t.name.as_str()))
        .collect();
    assert_eq!(names, vec![(1, "first"), (2, "second")]);
    assert!(
        info.stages["test"].is_empty(),
        "a named stage without tasks is still a stage"
    );
}

#[test]
fn definition_given_as_raw_content_is_unwrapped() {
    let d = with_lifecycle(
        json!({"dev": [{"template": {"definition": {"rawContent": "{\"pipelineId\": 7}", "inline": true}}}]}),
    );
    assert_eq!(
        parse(&d).unwrap().stages["dev"][0].template,
        Some(json!({"pipelineId": 7}))
    );
}

#[test]
fn bad_shapes_name_the_place() {
    let cases = [
        (json!([]), "the descriptor must be a JSON object"),
        (json!({"info": {}}), "internalComponents.lifecycleInfo is missing"),
        (with_lifecycle(json!("dev")), "internalComponents.lifecycleInfo must be an object, found a string"),
        (with_lifecycle(json!({"dev": {}})), "internalComponents.lifecycleInfo.dev must be a list of tasks, found an object"),
        (with_lifecycle(json!({"dev": [{"template": {"definition": "x"}}]})),
         "internalComponents.lifecycleInfo.dev[0].template.definition must be an object, found a string"),
        (with_lifecycle(json!({"dev": [{"configurations": [1]}]})),
         "internalComponents.lifecycleInfo.dev[0].configurations must be an object, found an array"),
        (with_lifecycle(json!({"dev": [{"service": {"$href": 3}}]})),
         "internalComponents.lifecycleInfo.dev[0].service.$href must be a string, found a number"),
        (with_lifecycle(json!({"tasksInfo": [{"order": 1}]})),
         "internalComponents.lifecycleInfo.tasksInfo[0].stageName is missing"),
        (with_lifecycle(json!({"tasksInfo": [{"stageName": "dev", "rawContent": "{nope"}]})),
         "internalComponents.lifecycleInfo.tasksInfo[0].rawContent is not valid JSON"),
    ];
    for (descriptor, expected) in cases {
        let message = parse(&descriptor).unwrap_err().0;
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
}
