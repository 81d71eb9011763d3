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

/// A task's template: its inline definition and its reference.
fn template_of(task: &TaskDefinition) -> (Option<Value>, Option<&str>) {
    (task.template.clone(), task.template_ref.as_deref())
}

#[test]
fn a_template_by_reference_is_kept_as_its_ref_with_the_usual_name() {
    let url = "http://registry:8001/api/v1/pp/registry/templates/65f81a2f";
    let d = with_lifecycle(json!({"dev": [
        {"template": {"name": "deploy", "description": "Deploy it",
                      "definition": {"$ref": url, "mediaType": "application/json"}}},
        {"template": {"$ref": " 65f81a2f "}},
        {"template": {"name": "resolved", "definition": {"$ref": url, "rawContent": "{\"pipelineId\": 3}"}}}
    ]}));
    let dev = &parse(&d).unwrap().stages["dev"];
    assert_eq!(
        dev.iter().map(template_of).collect::<Vec<_>>(),
        [
            (None, Some(url)),
            (None, Some("65f81a2f")), // the whole template may be the reference
            (Some(json!({"pipelineId": 3})), None), // with its rawContent: already resolved
        ]
    );
    assert_eq!(dev[0].name, "deploy");
    assert_eq!(dev[0].description.as_deref(), Some("Deploy it"));
    assert_eq!(dev[1].name, "task2");
}

#[test]
fn normalized_tasks_follow_the_registry_reference_not_the_authored_one() {
    let registry_ref = "http://registry:8001/api/v1/pp/registry/templates/abc";
    let raw = |definition: Value| {
        json!({"service": {"$href": "azure-devops"}, "template": {"name": "t", "definition": definition}})
            .to_string()
    };
    let d = with_lifecycle(json!({"tasksInfo": [
        {"stageName": "dev", "order": 1,
         "template": {"name": "t", "definition": {"$ref": registry_ref, "originalRef": "template.json"}},
         "rawContent": raw(json!({"$ref": "template.json"}))},
        {"stageName": "dev", "order": 2, "template": {"name": "t"},
         "rawContent": raw(json!({"$ref": "abc"}))},
        {"stageName": "dev", "order": 3,
         "template": {"name": "t", "definition": {"$ref": registry_ref}},
         "rawContent": raw(json!({"pipelineId": 9}))}
    ]}));
    let dev = &parse(&d).unwrap().stages["dev"];
    assert_eq!(
        dev.iter().map(template_of).collect::<Vec<_>>(),
        [
            (None, Some(registry_ref)),
            // Without a definition of its own, the authored reference is all there is.
            (None, Some("abc")),
            // An authored inline definition still wins.
            (Some(json!({"pipelineId": 9})), None),
        ]
    );
}

#[test]
fn the_template_id_is_the_reference_or_its_last_templates_segment() {
    for (reference, id) in [
        (
            "65f81a2f-65d8-3f03-9dff-ba598ba0292c",
            Some("65f81a2f-65d8-3f03-9dff-ba598ba0292c"),
        ),
        (" 42 ", Some("42")),
        (
            "http://r:8001/api/v1/pp/registry/templates/abc",
            Some("abc"),
        ),
        (
            "http://r:8001/api/v1/pp/registry/templates/abc/?x=1#f",
            Some("abc"),
        ),
        ("/api/v1/pp/registry/templates/abc", Some("abc")),
        ("http://r:8001/api/v1/pp/registry/templates/", None),
        (
            "http://r:8001/api/v1/pp/registry/templates/abc/versions/1",
            None,
        ),
        ("https://git.example.com/pipelines/template.json", None),
        ("", None),
    ] {
        assert_eq!(template_id(reference), id, "{reference:?}");
    }
}

#[test]
fn the_registry_answer_gives_its_definition_or_says_why_not() {
    let ok = [
        json!({"id": "abc", "name": "t", "definition": "{\"pipelineId\": 3}"}),
        json!({"id": 7, "name": "t", "content": "{\"pipelineId\": 3}"}),
        json!({"id": "abc", "definition": {"pipelineId": 3}, "content": "ignored"}),
    ];
    for answer in ok {
        assert_eq!(
            registry_template_definition(&answer),
            Ok(json!({"pipelineId": 3})),
            "{answer}"
        );
    }
    let bad = [
        (
            json!({"id": "abc"}),
            "the registry's answer holds no definition",
        ),
        (
            json!({"definition": "{nope"}),
            "its `definition` is not valid JSON",
        ),
        (
            json!({"content": "[1, 2]"}),
            "its `content` must hold a JSON object, found an array",
        ),
        (
            json!({"definition": 3}),
            "its `definition` must hold a JSON object, found a number",
        ),
        (json!([]), "the registry's answer holds no definition"),
    ];
    for (answer, expected) in bad {
        let message = registry_template_definition(&answer).unwrap_err();
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
}

#[test]
fn a_task_without_an_executor_is_said_so_by_an_absent_or_empty_service() {
    let tasks = parse(&with_lifecycle(json!({"dev": [
        {"template": {"name": "none"}},
        {"service": null},
        {"service": {}},
        {"service": {"$href": null}},
        {"service": {"$href": "{gitlab}", "mediaType": "text/plain"}},
    ]})))
    .unwrap();
    let executors: Vec<_> = tasks.stages["dev"]
        .iter()
        .map(|t| t.executor_ref.as_deref())
        .collect();
    assert_eq!(executors, [None, None, None, None, Some("gitlab")]);
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
        (with_lifecycle(json!({"dev": [{"template": {"definition": {"$ref": 3}}}]})),
         "internalComponents.lifecycleInfo.dev[0].template.definition.$ref must be a non-blank string, found a number"),
        (with_lifecycle(json!({"dev": [{"template": {"$ref": " "}}]})),
         "internalComponents.lifecycleInfo.dev[0].template.$ref must be a non-blank string, found a string"),
        (with_lifecycle(json!({"dev": [{"service": {"$href": 3}}]})),
         "internalComponents.lifecycleInfo.dev[0].service.$href must be a string, found a number"),
        // A task that should deploy must not become one without an executor (PROCESSED at once).
        (with_lifecycle(json!({"dev": [{"service": "{azure-devops}"}]})),
         "internalComponents.lifecycleInfo.dev[0].service must be an object naming the executor, as {\"$href\": \"{azure-devops}\"}, found a string"),
        (with_lifecycle(json!({"dev": [{"service": [1]}]})),
         "internalComponents.lifecycleInfo.dev[0].service must be an object naming the executor"),
        (with_lifecycle(json!({"dev": [{"service": {"href": "{azure-devops}"}}]})),
         "internalComponents.lifecycleInfo.dev[0].service has no `$href` naming the executor (it has `href`)"),
        (with_lifecycle(json!({"dev": [{"service": {"$href": "{}"}}]})),
         "internalComponents.lifecycleInfo.dev[0].service.$href names no executor (found \"{}\")"),
        (with_lifecycle(json!({"dev": [{"service": {"$href": " "}}]})),
         "internalComponents.lifecycleInfo.dev[0].service.$href names no executor"),
        (with_lifecycle(json!({"dev": [{"template": {"name": 5}}]})),
         "internalComponents.lifecycleInfo.dev[0].template.name must be a string, found a number"),
        (with_lifecycle(json!({"dev": [{"template": {"description": {}}}]})),
         "internalComponents.lifecycleInfo.dev[0].template.description must be a string, found an object"),
        (with_lifecycle(json!({"tasksInfo": [{"stageName": "dev", "service": "azure-devops"}]})),
         "internalComponents.lifecycleInfo.tasksInfo[0].service must be an object"),
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
