//! Placeholders: references from a task's `template` and `configurations` to the Context
//! (DESIGN §4). Pure code, no I/O: the engine calls [`resolve`] when it dispatches a task and
//! [`check_activity`] when it creates an activity.
//!
//! # Public API
//!
//! * [`StageTaskNames`]: the task names of every stage, to translate `results.<name>` to a position.
//! * [`resolve`]`(value, context, names, on_missing, max_inserted) -> Result<Value, ResolveError>`.
//! * [`resolve_planned`]`(value, context, names, own_stage, max_inserted)`: the same for a dry
//!   run's plan, leaving references to the new activity's own results as written (listed as
//!   resolving at run time) and listing those that do not resolve instead of stopping.
//! * [`check_activity`]`(stage, tasks, known_stages, names, max_listed) -> Checked` (the first
//!   bad references, how many in all, and how many placeholders each task holds).
//!
//! # Syntax
//!
//! `${<stage><path>}`, or the alternative spelling `$<<stage><path>>`, anywhere inside a string
//! value (object keys are never resolved).
//!
//! * `<stage>`: a name made of letters, digits, `_`, `-` and `:`, or a quoted name `['my stage']`.
//! * `<path>`: one or more segments, JSONPath style:
//!   `.key` (same characters as a stage name), `['key']` or `["key"]` (any text; only `\\`, `\'`
//!   and `\"` may be escaped), `[n]` (array index; negative counts from the end, `-1` is the last),
//!   and the wildcards `.*` / `[*]`. Filters, slices, unions and `..` are not accepted: they would
//!   make a reference hard to check statically and collide with the closing `}` / `>`.
//! * `results.<task>`: `<task>` is `taskN` (N ≥ 1, no leading zero) meaning position N — always,
//!   even if another task is *named* `taskN` — or else a task name, translated to its position
//!   through [`StageTaskNames`]. A name shared by several tasks of the stage is not usable.
//!
//! The path is evaluated with `jsonpath-rust` against the context as the query
//! `$['<stage>']['results']['taskN']…`, built directly as the library's query model: any stage or
//! key text works, and no JSONPath text is parsed on dispatch.
//!
//! # Scanning rules
//!
//! * `$${` is the literal text `${`, `$$<` the literal `$<`; any other `$` is literal.
//!   These escapes are consumed by resolution, so resolving a value twice is not idempotent.
//! * `${` always opens a placeholder: an unterminated or malformed one is a syntax error.
//!   This means shell `${VAR}` or Azure `${{ … }}` in a value must be written `$${VAR}`.
//! * `$<` opens a placeholder only when a well-formed reference and `>` follow; otherwise it
//!   is literal text (`$<` is common in shell snippets and makefiles).
//! * A malformed `${…}` ends after its first `}`, or before the next `${`, or at the end.
//! * Scanning costs time linear in the text, whatever it holds (`parse::scan` counts it).
//!
//! # Values
//!
//! A string that is exactly one placeholder (nothing around it, not even spaces) becomes the
//! referenced JSON value itself. A placeholder inside a longer string is replaced by the value's
//! text: strings raw, anything else as compact JSON (`null`, `42`, `{"a":1}`). Resolution works on
//! `serde_json::Value`, never on JSON text, so quotes or backslashes in values cannot corrupt it.
//!
//! A path without wildcard matches at most one value. A path with a wildcard always yields an
//! array of every match in document order (object members in key order), possibly empty — a
//! fixed type whatever the data — but the part before the first wildcard must exist.
//!
//! # Missing values
//!
//! With [`OnMissing::Fail`] the first placeholder that does not resolve (or is malformed) is an
//! [`Unresolved`] saying what is missing: the stage, the task, or the key. With
//! [`OnMissing::Keep`] such placeholders are left as written and the rest is still resolved.
//!
//! # Static check
//!
//! [`check_activity`] reports every malformed reference, unknown stage, unknown or shared task
//! name, and reference to results of the same or a later task of the activity's own stage (those
//! have not finished when the task runs). Whether another stage has run, and what its results
//! hold, is only known at run time.

mod check;
mod eval;
mod parse;
mod resolve;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;

pub use check::{check_activity, BadReference, Checked, TaskToCheck};
pub use resolve::{resolve, resolve_planned, PlannedValue};

/// What resolving does with a placeholder that does not resolve (`placeholders.on_missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// The first one fails the resolution.
    Fail,
    /// It stays as written; the rest is still resolved.
    Keep,
}

/// Why [`resolve`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
    /// What the placeholders insert is larger than `max` bytes.
    #[error("the placeholders insert more than {max} bytes")]
    TooLarge { max: usize },
}

/// The names of the tasks of every stage, to translate `results.<name>` into `taskN`.
///
/// A stage that was not added has no usable names. At dispatch, the names of a stage should be
/// those of the activity whose results are in the context, so names and positions agree.
#[derive(Debug, Clone, Default)]
pub struct StageTaskNames {
    stages: HashMap<String, TaskNames>,
}

impl StageTaskNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the task names of `stage`, in position order (the first is position 1). Names
    /// used by several tasks are remembered as shared so the error can say so.
    pub fn add_stage<I, N>(&mut self, stage: impl Into<String>, names_in_position_order: I)
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let names = names_in_position_order
            .into_iter()
            .enumerate()
            .map(|(i, name)| (name, i + 1));
        self.stages.insert(stage.into(), TaskNames::new(names));
    }

    pub(crate) fn lookup(&self, stage: &str, name: &str) -> NameLookup {
        self.stages
            .get(stage)
            .map_or(NameLookup::Unknown, |names| names.lookup(name))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TaskNames {
    /// `None`: the name is shared by several tasks.
    positions: HashMap<String, Option<usize>>,
}

impl TaskNames {
    pub(crate) fn new<N: AsRef<str>>(names: impl IntoIterator<Item = (N, usize)>) -> Self {
        let mut positions = HashMap::new();
        for (name, position) in names {
            positions
                .entry(name.as_ref().to_owned())
                .and_modify(|p| *p = None)
                .or_insert(Some(position));
        }
        Self { positions }
    }

    pub(crate) fn lookup(&self, name: &str) -> NameLookup {
        match self.positions.get(name) {
            Some(Some(position)) => NameLookup::Position(*position),
            Some(None) => NameLookup::Shared,
            None => NameLookup::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameLookup {
    Position(usize),
    Shared,
    Unknown,
}

/// A placeholder that could not be resolved, with why. Its text is meant for the task's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placeholder {} did not resolve: {reason}", parse::shown(.placeholder))]
pub struct Unresolved {
    /// The placeholder exactly as written.
    pub placeholder: String,
    pub reason: String,
}
