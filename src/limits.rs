//! The bounds of DESIGN §14 (`limits.*` in the configuration). Every check answers with an
//! [`OverLimit`] whose text names what is too large, by how much, the limit's value and its
//! config key, so whoever meets it knows what to change:
//! `stage dev has 4000 tasks; at most 100 are allowed (limits.tasks_per_stage)`.
//!
//! Sizes of JSON values are their compact serialization (what is stored and sent), measured
//! without building it and without reading further than the limit.

use std::fmt;

use serde_json::Value;

use crate::config::LimitSettings;
use crate::descriptor::LifecycleInfo;
pub use crate::json_size_within;

/// Something over a limit; the text is meant for the caller (422 42213, 413 41301) or a task's
/// `errors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OverLimit(pub String);

/// `{subject} has {count} {unit}; at most {max} are allowed ({key})`
pub fn over(
    subject: &str,
    count: impl fmt::Display,
    unit: &str,
    max: usize,
    key: &str,
) -> OverLimit {
    over_with(&format!("{subject} has"), count, unit, max, key)
}

/// As [`over`], with the verb given: `the callback's results are more than 10 bytes…`.
pub fn over_with(
    subject_and_verb: &str,
    count: impl fmt::Display,
    unit: &str,
    max: usize,
    key: &str,
) -> OverLimit {
    OverLimit(format!(
        "{subject_and_verb} {count} {unit}; at most {max} are allowed ({key})"
    ))
}

impl LimitSettings {
    /// A name (stage, task, executor, product, version) of at most `name_chars` characters.
    pub fn check_name(&self, what: &str, name: &str) -> Result<(), OverLimit> {
        // Counting stops at the limit: a 1 MiB name costs no more than a long one.
        if name.chars().nth(self.name_chars).is_none() {
            return Ok(());
        }
        Err(over(
            &format!("{what} {}", excerpt(name)),
            name.chars().count(),
            "characters",
            self.name_chars,
            "limits.name_chars",
        ))
    }

    /// Stages per descriptor, tasks per stage, and the length of stage names, task names and
    /// executor references.
    pub fn check_lifecycle(&self, info: &LifecycleInfo) -> Result<(), OverLimit> {
        if info.stages.len() > self.stages {
            return Err(over(
                "the descriptor",
                info.stages.len(),
                "stages",
                self.stages,
                "limits.stages",
            ));
        }
        for (stage, tasks) in &info.stages {
            self.check_name("the stage name", stage)?;
            if tasks.len() > self.tasks_per_stage {
                return Err(over(
                    &format!("stage {stage}"),
                    tasks.len(),
                    "tasks",
                    self.tasks_per_stage,
                    "limits.tasks_per_stage",
                ));
            }
            for task in tasks {
                let at = format!("of task {} of stage {stage}", task.position);
                self.check_name(&format!("the name {at}"), &task.name)?;
                if let Some(executor) = &task.executor_ref {
                    self.check_name(&format!("the service {at}"), executor)?;
                }
            }
        }
        Ok(())
    }

    /// The `results` of one callback or executor reply; `whose`: "the callback's".
    pub fn check_results(&self, whose: &str, results: &Value) -> Result<(), OverLimit> {
        match json_size_within(results, self.results_bytes) {
            Some(_) => Ok(()),
            None => Err(over_with(
                &format!("{whose} results are"),
                format!("more than {} bytes", self.results_bytes),
                "of JSON",
                self.results_bytes,
                "limits.results_bytes",
            )),
        }
    }
}

/// At most 40 characters of `text`, quoted, for messages about text that may be huge.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Settings;
    use crate::descriptor::TaskDefinition;

    fn limits() -> LimitSettings {
        Settings::load_with_env(None, Vec::<(String, String)>::new())
            .unwrap()
            .limits
    }

    fn task(position: usize, name: &str) -> TaskDefinition {
        TaskDefinition {
            position,
            name: name.to_owned(),
            description: None,
            executor_ref: Some("azure-devops".into()),
            template: None,
            template_ref: None,
            configurations: None,
        }
    }

    fn lifecycle(stages: usize, tasks: usize) -> LifecycleInfo {
        LifecycleInfo {
            stages: (0..stages)
                .map(|s| {
                    let tasks = (1..=tasks).map(|p| task(p, &format!("t{p}"))).collect();
                    (format!("stage{s}"), tasks)
                })
                .collect(),
        }
    }

    #[test]
    fn defaults_are_those_of_the_design() {
        assert_eq!(
            limits().all(),
            [
                ("limits.tasks_per_stage", 100),
                ("limits.stages", 50),
                ("limits.name_chars", 200),
                ("limits.results_bytes", 262_144),
                ("limits.configurations_bytes", 1_048_576),
                ("limits.placeholders_per_task", 500),
                ("limits.listed_errors", 20),
            ]
        );
    }

    #[test]
    fn stages_and_tasks_just_under_pass_and_just_over_name_the_limit() {
        let l = limits();
        assert_eq!(l.check_lifecycle(&lifecycle(50, 100)), Ok(()));
        assert_eq!(
            l.check_lifecycle(&lifecycle(51, 1)).unwrap_err().0,
            "the descriptor has 51 stages; at most 50 are allowed (limits.stages)"
        );
        let mut info = lifecycle(1, 101);
        assert_eq!(
            l.check_lifecycle(&info).unwrap_err().0,
            "stage stage0 has 101 tasks; at most 100 are allowed (limits.tasks_per_stage)"
        );
        info.stages.get_mut("stage0").unwrap().pop();
        assert_eq!(l.check_lifecycle(&info), Ok(()));
    }

    #[test]
    fn names_count_characters_not_bytes() {
        let l = limits();
        let at_limit = "é".repeat(200);
        assert_eq!(l.check_name("the stage name", &at_limit), Ok(()));
        let over = format!("{at_limit}x");
        let message = l.check_name("the stage name", &over).unwrap_err().0;
        assert!(
            message.ends_with("has 201 characters; at most 200 are allowed (limits.name_chars)"),
            "{message}"
        );
        assert!(
            message.len() < 200,
            "the name is only quoted in part: {message}"
        );

        let mut info = lifecycle(1, 2);
        info.stages.get_mut("stage0").unwrap()[1].name = "n".repeat(201);
        let message = l.check_lifecycle(&info).unwrap_err().0;
        assert!(
            message.starts_with("the name of task 2 of stage stage0 \"nnn"),
            "{message}"
        );
        let mut info = lifecycle(1, 1);
        info.stages.get_mut("stage0").unwrap()[0].executor_ref = Some("e".repeat(201));
        let message = l.check_lifecycle(&info).unwrap_err().0;
        assert!(
            message.starts_with("the service of task 1 of stage stage0"),
            "{message}"
        );
        let info = LifecycleInfo {
            stages: [("s".repeat(201), vec![task(1, "a")])].into(),
        };
        let message = l.check_lifecycle(&info).unwrap_err().0;
        assert!(message.starts_with("the stage name \"sss"), "{message}");
    }

    #[test]
    fn json_sizes_are_the_compact_text_and_stop_at_the_limit() {
        let value = json!({"a": [1, "x"], "b": null});
        let text = value.to_string();
        assert_eq!(json_size_within(&value, text.len()), Some(text.len()));
        assert_eq!(json_size_within(&value, text.len() - 1), None);
        let l = LimitSettings {
            results_bytes: text.len(),
            ..limits()
        };
        assert_eq!(l.check_results("the callback's", &value), Ok(()));
        let l = LimitSettings {
            results_bytes: text.len() - 1,
            ..l
        };
        assert_eq!(
            l.check_results("the callback's", &value).unwrap_err().0,
            format!(
                "the callback's results are more than {0} bytes of JSON; at most {0} are allowed (limits.results_bytes)",
                text.len() - 1
            )
        );
    }

    fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_with_env(None, env).map_err(|e| e.to_string())
    }

    #[test]
    fn limits_and_the_task_timeout_are_refused_at_start_when_unusable() {
        let settings = load(&[("ODM_DEVOPS__LIMITS__TASKS_PER_STAGE", "7")]).unwrap();
        assert_eq!(settings.limits.tasks_per_stage, 7);
        let error = load(&[("ODM_DEVOPS__LIMITS__LISTED_ERRORS", "0")]).unwrap_err();
        assert!(
            error.contains("limits.listed_errors must be at least 1"),
            "{error}"
        );
        let error = load(&[("ODM_DEVOPS__ENGINE__TASK_TIMEOUT_SECS", "2592001")]).unwrap_err();
        assert!(
            error.contains(
                "engine.task_timeout_secs must be from 1 to 2592000 (30 days), found 2592001"
            ),
            "{error}"
        );
        assert!(load(&[("ODM_DEVOPS__ENGINE__TASK_TIMEOUT_SECS", "2592000")]).is_ok());
        let error = load(&[("ODM_DEVOPS__LIMITS__PLACEHOLDERS", "5")]).unwrap_err();
        assert!(
            error.contains("placeholders"),
            "unknown keys are named: {error}"
        );
    }

    /// Governance must not fail open: an active policy service needs its address; listeners
    /// are checked (the checks themselves: `notifications::tests`).
    #[test]
    fn policy_without_an_address_is_refused_and_listeners_are_checked() {
        let error = load(&[("ODM_DEVOPS__POLICY__ACTIVE", "true")]).unwrap_err();
        assert!(error.contains("policy.address is not set"), "{error}");
        let settings = load(&[
            ("ODM_DEVOPS__POLICY__ACTIVE", "true"),
            ("ODM_DEVOPS__POLICY__ADDRESS", "http://policy:8080"),
            ("ODM_DEVOPS__POLICY__STAGE_ORDER", "dev,test,prod"),
        ])
        .unwrap();
        assert!(settings.policy.active);
        assert_eq!(settings.policy.stage_order, ["dev", "test", "prod"]);
        assert_eq!(settings.policy.timeout_ms, 10_000);
        let error = load(&[("ODM_DEVOPS__POLICY__STAGE_ORDER", "dev,dev")]).unwrap_err();
        assert!(error.contains("policy.stage_order"), "{error}");
        let error = load(&[("ODM_DEVOPS__POLICY__TIMEOUT_MS", "0")]).unwrap_err();
        assert!(error.contains("policy.timeout_ms"), "{error}");
        assert!(load(&[("ODM_DEVOPS__POLICY__ACTIVE", "false")]).is_ok());
        let listeners = |yaml: &str| {
            let file = std::env::temp_dir().join(format!(
                "odm-listeners-{}.yaml",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::write(&file, format!("notifications:\n  listeners: [{yaml}]\n")).unwrap();
            let loaded = Settings::load_with_env(Some(&file), Vec::<(String, String)>::new());
            std::fs::remove_file(&file).unwrap();
            loaded.map_err(|e| e.to_string())
        };
        let loaded = listeners("{name: audit, address: \"http://audit:8080\"}").unwrap();
        assert_eq!(loaded.notifications.listeners[0].name, "audit");
        let error = listeners("{name: audit, address: \"audit:8080\"}").unwrap_err();
        assert!(error.contains("(audit)"), "{error}");
    }

    #[test]
    fn the_sealing_key_comes_from_the_environment() {
        let settings = load(&[("ODM_DEVOPS__SECRETS__KEY", "k3y")]).unwrap();
        assert_eq!(settings.secrets.key.unwrap().expose(), "k3y");
        assert!(load(&[]).unwrap().secrets.key.is_none());
    }
}
