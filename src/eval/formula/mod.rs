//! The formula of `advanced.scalingModifiers`: parsed and type-checked once, evaluated per
//! reading.
//!
//! KEDA composes a ScaledObject's trigger metrics into one `composite-metric` with a formula
//! written in expr-lang (KEDA's "scaling modifiers" docs and its ScaledObject specification:
//! "Formula must return a single value (not boolean)"). Each *named* trigger is a variable
//! holding that trigger's metric value; KEDA hands the values over as floats.
//!
//! This module implements the part of expr-lang those docs use, with expr-lang's types and
//! precedence, so a formula that passes here means the same thing in KEDA:
//!
//! | what | forms |
//! | --- | --- |
//! | numbers | `10` (integer), `2.5`, `1e3` (float), `1_000` |
//! | booleans | `true`, `false` |
//! | variables | trigger names: letters, digits and `_`, not starting with a digit |
//! | arithmetic | `+ - * / %`, unary `-` and `+` |
//! | comparisons | `< <= > >= == !=` |
//! | logic | `&&` / `and`, <code>&#124;&#124;</code> / `or`, `!` / `not` (short-circuiting) |
//! | conditional | `cond ? a : b` |
//! | functions | `min(a, b, ...)`, `max(a, b, ...)`, `abs(x)`, `ceil(x)`, `floor(x)` |
//!
//! Everything else expr-lang has (strings, arrays, maps, member access, `??`, pipes, other
//! functions, `**`) is rejected with an error naming it and its column, rather than guessed at.
//!
//! Types follow expr-lang: integers and floats are numbers, booleans are not; `/` always gives
//! a float, `+ - *` of two integers give an integer, `ceil`/`floor` give floats, and `%` takes
//! integers only. Since trigger values are floats, `%` on a trigger value is an error here, as
//! it is in KEDA. Type errors that can be seen without values are reported by [`Formula::parse`]
//! (KEDA compiles the formula when the ScaledObject is applied); the rest at evaluation.
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

use ast::Node;
use ast::Value;
use eval::eval;
use lexer::{TokenKind, lex};
use parser::{Parser, unexpected_after_operand};
use types::{Ty, check};

/// How deeply a formula may nest (parentheses, operators, calls).
///
/// KEDA's documented formulas nest three or four levels; 64 is far beyond anything written by
/// hand, and bounds the parser's and the evaluator's recursion (and the drop of the tree) well
/// inside a 2 MiB thread stack, so no input can overflow the stack.
const MAX_DEPTH: usize = 64;

/// The functions a formula may call, with their arity, for parsing and error messages.
const FUNCTIONS: &str = "min, max, abs, ceil, floor";

/// Words expr-lang uses as binary operators that this subset does not support.
const UNSUPPORTED_OPERATOR_WORDS: &[&str] =
    &["in", "matches", "contains", "startsWith", "endsWith"];

/// expr-lang words that start an expression this subset does not support.
const UNSUPPORTED_KEYWORDS: &[&str] = &["nil", "let", "if", "else"];

/// A parse, type or evaluation error, with the 1-based column (in characters) it points at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FormulaError {
    /// 1-based column, in characters, of the token the error is about; one past the end for
    /// errors at the end of the formula.
    pub column: usize,
    /// What is wrong, and when it is unsupported, what is supported instead.
    pub message: String,
}

impl FormulaError {
    /// `column0` is the 0-based character index.
    fn at(column0: usize, message: impl Into<String>) -> Self {
        FormulaError {
            column: column0 + 1,
            message: message.into(),
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
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
            depth: 0,
        };
        let root = parser.parse_expr()?;
        let end = parser.peek();
        if end.kind != TokenKind::End {
            return Err(unexpected_after_operand(end, "the end of the formula"));
        }
        match check(&root)? {
            Ty::Bool => Err(FormulaError::at(
                0,
                "the formula produces a boolean, but KEDA needs a number (the composite \
                 metric value); use `cond ? a : b` to choose between numbers",
            )),
            _ => Ok(Formula {
                source: source.to_owned(),
                root,
            }),
        }
    }

    /// The formula as written.
    pub fn source(&self) -> &str {
        &self.source
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

    /// Evaluates the formula with `values` (trigger name → metric value).
    ///
    /// Errors: a variable missing from `values` (the message lists the names it has), a
    /// non-finite value, division by zero, overflow, and type errors that depend on which
    /// branch of a conditional was taken. Never panics and never returns NaN or infinity.
    pub fn evaluate(&self, values: &BTreeMap<String, f64>) -> Result<f64> {
        match eval(&self.root, values)? {
            Value::Int(i) => Ok(i as f64),
            Value::Float(f) => Ok(f),
            Value::Bool(_) => Err(FormulaError::at(
                0,
                "the formula produced a boolean, but KEDA needs a number (the composite \
                 metric value)",
            )),
        }
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
mod tests;
