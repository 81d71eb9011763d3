//! Replacing the placeholders of a JSON value with what they reference.

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::{Map, Value};

use super::eval::evaluate;
use super::parse::{split, Piece, Reference};
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
    }
    .value(value)
}

struct Resolver<'a> {
    context: &'a Value,
    names: &'a StageTaskNames,
    on_missing: OnMissing,
    /// Bytes placeholders may still insert.
    budget: Cell<usize>,
    max_inserted: usize,
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
        let outcome = match reference {
            Ok(reference) => evaluate(reference, self.context, self.names),
            Err(syntax) => Err(format!("syntax error: {syntax}")),
        };
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
