//! The formula of `advanced.scalingModifiers`: parsed and type-checked once, evaluated per
//! reading.
//!
//! KEDA composes a ScaledObject's trigger metrics into one `composite-metric` with a formula
//! written in expr-lang (KEDA's "scaling modifiers" docs and its ScaledObject specification:
//! "Formula must return a single value (not boolean)"). Each *named* trigger is a variable
//! holding that trigger's metric value; KEDA hands the values over as floats.
//!
//! This module implements the part of expr-lang (v1.17, the version KEDA pins) that formulas
//! over trigger values use, with expr-lang's parser, types and run-time rules, so a formula
//! that passes here means the same thing in KEDA:
//!
//! | what | forms |
//! | --- | --- |
//! | numbers | `10` (integer), `2.5`, `.5`, `1e3` (float), `1_000`, `0x1F`, `0o17`, `0b101` |
//! | booleans, nil | `true`, `false`, `nil` |
//! | variables | trigger names: letters, digits and `_`, not starting with a digit |
//! | arithmetic | `+ - * / %`, `**` and `^` (power, a float), unary `-` and `+` |
//! | comparisons | `< <= > >= == !=`; `a < b < c` is `a < b && b < c` (`==`/`!=` do not chain) |
//! | logic | `&&` / `and`, <code>&#124;&#124;</code> / `or`, `!` / `not` (short-circuiting) |
//! | nil | `a ?? b`: `a` unless it is nil (a trigger that could not be read) |
//! | conditional | `cond ? a : b`, `cond ?: b` |
//! | arrays | `[a, b, c]`, as an argument of `count`, `min` and `max` |
//! | comments | `// to the end of the line`, `/* ... */` |
//! | functions | `min`, `max` (numbers and arrays), `abs`, `ceil`, `floor`, `round`, `float`, `count(array, {# > 1})` (`#` is the element) |
//!
//! Everything else expr-lang has (strings, maps, member access, indexing, pipes, `let`, other
//! functions) is rejected with an error naming it and its column, rather than guessed at.
//!
//! Types follow expr-lang: integers and floats are numbers, booleans are not; `/` and `**`
//! always give a float, `+ - *` of two integers give an integer, `ceil`/`floor`/`round`/
//! `float` give floats, and `%` takes integers only. Since trigger values are floats, `%` on a
//! trigger value is an error here, as it is in KEDA. Type errors that can be seen without
//! values are reported by [`Formula::parse`] (KEDA compiles the formula when the ScaledObject
//! is applied); the rest at evaluation. Nil is accepted by `??`, `==`, `!=` and nothing else.
//!
//! KEDA wraps the formula in `float(...)` (or, when it contains `??`, in a form that lets nil
//! through: KEDA then uses the fallback replicas), so the result must be a number; a nil
//! result is an error unless the formula contains `??` ([`Formula::evaluate_nullable`]).
//!
//! Two places deliberately differ from Go's arithmetic: division (and `%`) by zero and
//! results too large for a float are errors instead of `+Inf` or a panic, and integer overflow
//! is an error instead of wrapping around. A replica count computed from `+Inf` would be
//! meaningless, so the dry run says so instead.

use std::{collections::BTreeMap, fmt, str::FromStr};

mod ast;
mod eval;
mod lexer;
mod parser;
mod types;

use ast::{Node, Value};
use eval::{Scope, eval};
use lexer::{TokenKind, lex};
use parser::{Parser, unexpected_after_operand};
use types::{Ty, check};

/// How deeply a formula may nest (parentheses, operators, calls).
///
/// KEDA's documented formulas nest three or four levels; 64 is far beyond anything written by
/// hand, and bounds the parser's and the evaluator's recursion (and the drop of the tree) well
/// inside a 2 MiB thread stack, so no input can overflow the stack.
const MAX_DEPTH: usize = 64;

/// How many operators and operands a formula may have, counting each operand a chained
/// comparison shares (`b` in `a < b < c`) twice, as expr-lang's tree has it.
///
/// Hand-written formulas have tens; the bound keeps nested chains, whose shared operands are
/// copied, from growing the tree exponentially.
const MAX_NODES: usize = 100_000;

/// The functions a formula may call, with their arity, for parsing and error messages.
const FUNCTIONS: &str = "min, max, abs, ceil, floor, round, float, count";

/// Words expr-lang uses as binary operators that this subset does not support.
const UNSUPPORTED_OPERATOR_WORDS: &[&str] =
    &["in", "matches", "contains", "startsWith", "endsWith"];

/// expr-lang words that start an expression this subset does not support.
const UNSUPPORTED_KEYWORDS: &[&str] = &["let", "if", "else"];

/// A parse, type or evaluation error, with the 1-based column (in characters) it points at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FormulaError {
    /// 1-based column, in characters, of the token the error is about; one past the end for
    /// errors at the end of the formula.
    pub column: usize,
    /// What is wrong, and when it is unsupported, what is supported instead.
    pub message: String,
    /// Where Go gives ±Inf, NaN or a wrapped integer instead of an error (division by zero,
    /// overflow): KEDA's admission check does not see these.
    arithmetic: bool,
}

impl FormulaError {
    /// `column0` is the 0-based character index.
    fn at(column0: usize, message: impl Into<String>) -> Self {
        FormulaError {
            column: column0 + 1,
            message: message.into(),
            arithmetic: false,
        }
    }

    /// An error where Go's arithmetic gives ±Inf, NaN or wraps around instead.
    fn arithmetic(column0: usize, message: impl Into<String>) -> Self {
        FormulaError {
            arithmetic: true,
            ..FormulaError::at(column0, message)
        }
    }
}

type Result<T, E = FormulaError> = std::result::Result<T, E>;

/// A parsed, type-checked scalingModifiers formula.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    source: String,
    root: Node,
}

impl Formula {
    /// Parses and type-checks `source`. Variables are not resolved yet: see
    /// [`Formula::check_variables`].
    pub fn parse(source: &str) -> Result<Formula> {
        let tokens = lex(source)?;
        let mut parser = Parser::new(&tokens);
        let root = parser.parse_expression(0)?;
        let end = parser.peek();
        if end.kind != TokenKind::End {
            return Err(unexpected_after_operand(end, "the end of the formula"));
        }
        let what = match check(&root)? {
            Ty::Bool => "a boolean",
            Ty::Array => "an array",
            _ => {
                return Ok(Formula {
                    source: source.to_owned(),
                    root,
                });
            }
        };
        Err(FormulaError::at(
            0,
            format!(
                "the formula produces {what}, but KEDA needs a number (the composite metric \
                 value); use `cond ? a : b` to choose between numbers"
            ),
        ))
    }

    /// The formula as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether KEDA lets a nil result through to the fallback: it does when the formula's
    /// text contains `??` (KEDA's `castToFloatIfNecessary` looks for exactly that).
    pub fn coalesces(&self) -> bool {
        self.source.contains("??")
    }

    /// The distinct variables (trigger names) the formula refers to, sorted.
    pub fn variables(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.root.collect_variables(&mut names);
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Checks that every variable is one of `known` (the ScaledObject's trigger names), as
    /// KEDA does when it compiles the formula; the error points at the first unknown one.
    pub fn check_variables(&self, known: &[&str]) -> Result<()> {
        match self.root.first_unknown_variable(known) {
            Some((name, column0)) => Err(unknown_variable(name, column0, known)),
            None => Ok(()),
        }
    }

    /// KEDA's admission webhook runs the compiled formula once with every trigger at -1 and
    /// refuses the ScaledObject when that fails; this does the same. Errors where Go only
    /// gives an infinity (division by zero, overflow) do not count, as they do not in KEDA.
    pub fn check_admission(&self, known: &[&str]) -> Result<()> {
        let values = known.iter().map(|k| (k.to_string(), Some(-1.0))).collect();
        match self.evaluate_nullable(&values) {
            Err(e) if !e.arithmetic => Err(e),
            _ => Ok(()),
        }
    }

    /// Evaluates the formula with `values` (trigger name → metric value).
    ///
    /// Errors: a variable missing from `values` (the message lists the names it has), a
    /// non-finite value, division by zero, overflow, a nil result, and type errors that
    /// depend on which branch of a conditional was taken. Never panics and never returns NaN
    /// or infinity.
    pub fn evaluate(&self, values: &BTreeMap<String, f64>) -> Result<f64> {
        let values = values.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
        self.evaluate_nullable(&values)?
            .ok_or_else(|| FormulaError::at(0, "the formula gives nil, but KEDA needs a number"))
    }

    /// Evaluates the formula with `values`, where `None` is a trigger that could not be read
    /// (nil under `fallback.behavior: scalingModifiers`). `Ok(None)`: the formula gave nil and
    /// contains `??`, so KEDA falls back ([`Formula::coalesces`]).
    pub fn evaluate_nullable(&self, values: &BTreeMap<String, Option<f64>>) -> Result<Option<f64>> {
        let scope = Scope {
            values,
            element: None,
        };
        let what = match eval(&self.root, scope)? {
            Value::Int(i) => return Ok(Some(i as f64)),
            Value::Float(f) => return Ok(Some(f)),
            Value::Nil if self.coalesces() => return Ok(None),
            Value::Nil => {
                "nil, and KEDA's `float()` around the formula refuses nil (only a formula with \
                 `??` may give nil, and then KEDA uses the fallback replicas)"
            }
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
        };
        Err(FormulaError::at(
            0,
            format!(
                "the formula produced {what}, but KEDA needs a number (the composite metric value)"
            ),
        ))
    }
}

impl FromStr for Formula {
    type Err = FormulaError;

    fn from_str(s: &str) -> Result<Self> {
        Formula::parse(s)
    }
}

impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn unknown_variable(name: &str, column0: usize, known: &[&str]) -> FormulaError {
    let message = if known.is_empty() {
        format!(
            "unknown variable `{name}`: no trigger has a `name`, and a formula can only refer \
             to named triggers"
        )
    } else {
        let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        format!(
            "unknown variable `{name}`; the formula can use the trigger names {}",
            list.join(", ")
        )
    };
    FormulaError::at(column0, message)
}

#[cfg(test)]
mod peers;
#[cfg(test)]
mod tests;
