//! Replacing the placeholders of a JSON value with what they reference.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use serde_json::{Map, Value};

use super::eval::evaluate;
use super::parse::{split, Piece, Reference, Segment};
use super::{OnMissing, ResolveError, StageTaskNames, Unresolved};
use crate::json_size_within;

/// A copy of `value` with every placeholder in its string values resolved against `context`.
///
/// The engine resolves a task's `template` and `configurations` *before* putting the context
/// under `configurations.context`: the context itself is never resolved.
///
/// What the placeholders insert (a value's compact JSON, a string's text) may add up to
/// `max_inserted` bytes: beyond that resolution stops with [`ResolveError::TooLarge`], before
/// building more, so a large result referenced many times never multiplies in memory.
pub fn resolve(
    value: &Value,
    context: &Value,
    names: &StageTaskNames,
    on_missing: OnMissing,
    max_inserted: usize,
) -> Result<Value, ResolveError> {
    Resolver {
        context,
        names,
        on_missing,
        budget: Cell::new(max_inserted),
        max_inserted,
        plan: None,
    }
    .value(value)
}

/// What [`resolve_planned`] made of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedValue {
    /// The value with every placeholder resolved, except those listed below: they stay exactly
    /// as written.
    pub value: Value,
    /// Placeholders that read the results of the activity's own stage (`${<stage>.results…}`,
    /// as written): those tasks have not run yet, so they resolve at run time only.
    pub at_run_time: Vec<String>,
    /// Placeholders that do not resolve against the context given.
    pub unresolved: Vec<Unresolved>,
}

/// [`resolve`] for a plan (a dry run): `context` is what a task of a new activity of
/// `own_stage` would see if it ran now. A reference into that stage's results is left as
/// written and listed as resolving at run time (`${<own_stage>.status}` and `.finishedAt`
/// resolve: RUNNING and null); a reference that does not resolve is left as written and
/// listed, the rest still resolved. Only [`ResolveError::TooLarge`] stops it.
pub fn resolve_planned(
    value: &Value,
    context: &Value,
    names: &StageTaskNames,
    own_stage: &str,
    max_inserted: usize,
) -> Result<PlannedValue, ResolveError> {
    let resolver = Resolver {
        context,
        names,
        on_missing: OnMissing::Keep,
        budget: Cell::new(max_inserted),
        max_inserted,
        plan: Some(Plan {
            own_stage,
            at_run_time: RefCell::default(),
            unresolved: RefCell::default(),
        }),
    };
    let value = resolver.value(value)?;
    let plan = resolver.plan.expect("planning");
    Ok(PlannedValue {
        value,
        at_run_time: plan.at_run_time.into_inner(),
        unresolved: plan.unresolved.into_inner(),
    })
}

struct Resolver<'a> {
    context: &'a Value,
    names: &'a StageTaskNames,
    on_missing: OnMissing,
    /// Bytes placeholders may still insert.
    budget: Cell<usize>,
    max_inserted: usize,
    /// Set when resolving for a plan (`resolve_planned`).
    plan: Option<Plan<'a>>,
}

struct Plan<'a> {
    own_stage: &'a str,
    at_run_time: RefCell<Vec<String>>,
    unresolved: RefCell<Vec<Unresolved>>,
}

impl Plan<'_> {
    /// Whether `reference` reads what the activity's own tasks produce.
    fn resolves_at_run_time(&self, reference: &Reference) -> bool {
        let fixed = matches!(
            reference.path.as_slice(),
            [Segment::Key(key)] if key == "status" || key == "finishedAt"
        );
        reference.stage == self.own_stage && !fixed
    }
}

impl Resolver<'_> {
    /// Takes `value`'s size (a string inserted in a longer one: its text) from the budget.
    fn spend(&self, value: &Value, as_text: bool) -> Result<(), ResolveError> {
        let left = self.budget.get();
        let size = match value {
            Value::String(s) if as_text => (s.len() <= left).then_some(s.len()),
            other => json_size_within(other, left),
        };
        match size {
            Some(size) => {
                self.budget.set(left - size);
                Ok(())
            }
            None => Err(ResolveError::TooLarge {
                max: self.max_inserted,
            }),
        }
    }

    fn value(&self, value: &Value) -> Result<Value, ResolveError> {
        Ok(match value {
            Value::String(s) => self.string(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.value(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(members) => {
                let mut out = Map::new();
                for (key, member) in members {
                    out.insert(key.clone(), self.value(member)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn string(&self, s: &str) -> Result<Value, ResolveError> {
        // The engine resolves every task it dispatches: most strings have no `$` at all.
        if !s.contains('$') {
            return Ok(Value::String(s.to_owned()));
        }
        let pieces = split(s);
        if let [Piece::Placeholder { text, reference }] = pieces.as_slice() {
            return Ok(match self.lookup(text, reference)? {
                Some(value) => {
                    self.spend(&value, false)?;
                    value.into_owned()
                }
                None => Value::String(s.to_owned()),
            });
        }
        let mut out = String::with_capacity(s.len());
        for piece in &pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder { text, reference } => match self.lookup(text, reference)? {
                    Some(value) => {
                        self.spend(&value, true)?;
                        match value.as_ref() {
                            Value::String(v) => out.push_str(v),
                            other => out.push_str(&other.to_string()),
                        }
                    }
                    None => out.push_str(text),
                },
            }
        }
        Ok(Value::String(out))
    }

    /// The placeholder's value, or `None` when it is to be kept as written.
    fn lookup(
        &self,
        text: &str,
        reference: &Result<Reference, String>,
    ) -> Result<Option<Cow<'_, Value>>, Unresolved> {
        if let (Some(plan), Ok(reference)) = (&self.plan, reference) {
            if plan.resolves_at_run_time(reference) {
                plan.at_run_time.borrow_mut().push(text.to_owned());
                return Ok(None);
            }
        }
        let outcome = match reference {
            Ok(reference) => evaluate(reference, self.context, self.names),
            Err(syntax) => Err(format!("syntax error: {syntax}")),
        };
        if let (Some(plan), Err(reason)) = (&self.plan, &outcome) {
            plan.unresolved.borrow_mut().push(Unresolved {
                placeholder: text.to_owned(),
                reason: reason.clone(),
            });
            return Ok(None);
        }
        match (outcome, self.on_missing) {
            (Ok(value), _) => Ok(Some(value)),
            (Err(_), OnMissing::Keep) => Ok(None),
            (Err(reason), OnMissing::Fail) => Err(Unresolved {
                placeholder: text.to_owned(),
                reason,
            }),
        }
    }
}
