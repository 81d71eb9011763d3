//! The static check at activity creation: every bad reference, with where it is and why, so the
//! author fixes them all from one 422.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::eval::locate_task;
use super::parse::{push_key, shown, split, Piece, Reference};
use super::{StageTaskNames, TaskNames};

/// One task of the activity being created.
#[derive(Debug, Clone, Copy)]
pub struct TaskToCheck<'a> {
    /// 1-based position in the activity.
    pub position: usize,
    pub name: &'a str,
    pub template: &'a Value,
    pub configurations: &'a Value,
}

/// A reference that can never work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference {
    /// The position of the task it is in.
    pub position: usize,
    /// The placeholder exactly as written.
    pub placeholder: String,
    /// Where it is, e.g. `task2.configurations.params.vmIp`.
    pub location: String,
    pub reason: String,
}

impl fmt::Display for BadReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "placeholder {} at {}: {}",
            shown(&self.placeholder),
            self.location,
            self.reason
        )
    }
}

/// What [`check_activity`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checked {
    /// The first bad references, at most the number asked for.
    pub listed: Vec<BadReference>,
    /// How many bad references there are in all.
    pub bad: usize,
    /// (position, placeholders in its template and configurations) of each task.
    pub placeholders: Vec<(usize, usize)>,
}

/// The bad references in the `template` and `configurations` of `tasks` (position order), the
/// tasks of a new activity of `stage` (the first `max_listed` of them, and how many in all), and
/// how many placeholders each task holds. `configurations.context` is skipped: the engine
/// replaces it.
///
/// Names in the activity's own stage are taken from `tasks` (the snapshot that will run); those
/// of other stages from `names`, which must hold every stage of the descriptor.
pub fn check_activity(
    stage: &str,
    tasks: &[TaskToCheck<'_>],
    known_stages: &BTreeSet<String>,
    names: &StageTaskNames,
    max_listed: usize,
) -> Checked {
    let own_names = TaskNames::new(tasks.iter().map(|t| (t.name, t.position)));
    let check = Check {
        stage,
        known_stages,
        names,
        own_names: &own_names,
    };
    let mut checked = Checked::default();
    for task in tasks {
        let mut count = 0;
        for (part, value) in [
            ("template", task.template),
            ("configurations", task.configurations),
        ] {
            let mut location = format!("task{}", task.position);
            push_key(&mut location, part);
            let skip_context = part == "configurations";
            visit_strings(value, &mut location, skip_context, &mut |s, location| {
                for piece in split(s) {
                    if let Piece::Placeholder { text, reference } = piece {
                        count += 1;
                        if let Err(reason) = check.reference(text, &reference, task.position) {
                            checked.bad += 1;
                            if checked.listed.len() < max_listed {
                                checked.listed.push(BadReference {
                                    position: task.position,
                                    placeholder: text.to_owned(),
                                    location: location.to_owned(),
                                    reason,
                                });
                            }
                        }
                    }
                }
            });
        }
        checked.placeholders.push((task.position, count));
    }
    checked
}

struct Check<'a> {
    stage: &'a str,
    known_stages: &'a BTreeSet<String>,
    names: &'a StageTaskNames,
    own_names: &'a TaskNames,
}

impl Check<'_> {
    fn reference(
        &self,
        text: &str,
        reference: &Result<Reference, String>,
        position: usize,
    ) -> Result<(), String> {
        // Most of these are text that was never meant as a placeholder (shell `${VAR}`).
        let opener = &text[..2];
        let hint = format!("; write ${opener} for a literal {opener}");
        let reference = match reference {
            Ok(reference) => reference,
            Err(syntax) => return Err(format!("syntax error: {syntax}{hint}")),
        };
        let stage = reference.stage.as_str();
        if stage != self.stage && !self.known_stages.contains(stage) {
            let known = match self
                .known_stages
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
            {
                known if known.is_empty() => "none".to_owned(),
                known => known.join(", "),
            };
            return Err(format!(
                "unknown stage {stage} (known stages: {known}){hint}"
            ));
        }
        let Some(task) = reference.task() else {
            return Ok(());
        };
        if stage != self.stage {
            return locate_task(stage, task, |name| self.names.lookup(stage, name)).map(|_| ());
        }
        let (target, label) = locate_task(stage, task, |name| self.own_names.lookup(name))?;
        if target >= position {
            return Err(format!(
                "task{position} cannot use the results of {label} of its own stage {stage}: \
                 only earlier tasks have finished when it runs"
            ));
        }
        Ok(())
    }
}

/// Calls `found` with every string value that may hold a placeholder and its location.
fn visit_strings(
    value: &Value,
    location: &mut String,
    skip_context: bool,
    found: &mut impl FnMut(&str, &str),
) {
    let len = location.len();
    match value {
        Value::String(s) if s.contains('$') => found(s, location),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                location.push_str(&format!("[{i}]"));
                visit_strings(item, location, false, found);
                location.truncate(len);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                if skip_context && key == "context" {
                    continue;
                }
                push_key(location, key);
                visit_strings(member, location, false, found);
                location.truncate(len);
            }
        }
        _ => {}
    }
}
