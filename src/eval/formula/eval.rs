//! Evaluation of a checked tree against trigger values, with expr-lang's run-time rules.
//!
//! A trigger's value is a float, or nil when it could not be read and the ScaledObject's
//! `fallback.behavior` is `scalingModifiers`. Only `??`, `==`, `!=` and `min`/`max` of one
//! argument accept nil, as in expr-lang; every other operator refuses it with an error that
//! says how to give the trigger a default.

use std::{cmp::Ordering, collections::BTreeMap};

use super::{FormulaError, Result, ast::*, types::need_integer, unknown_variable};

/// What a node is evaluated against: the trigger values, and inside a predicate the element
/// `#` stands for.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub(super) values: &'a BTreeMap<String, Option<f64>>,
    pub(super) element: Option<&'a Value>,
}

/// A float result, refused when it left the finite range (Go would give ±Inf or NaN).
fn finite(f: f64, op: &str, column: usize) -> Result<Value> {
    if f.is_finite() {
        return Ok(Value::Float(f));
    }
    let message = if f.is_nan() {
        format!("`{op}` gives no real number (NaN)")
    } else {
        format!("`{op}` overflows: the result is too large for a number")
    };
    Err(FormulaError::arithmetic(column, message))
}

fn overflow(op: &str, column: usize) -> FormulaError {
    FormulaError::arithmetic(
        column,
        format!("`{op}` overflows the integer range; use floats (`2.0`) for large values"),
    )
}

/// An operand of the wrong type at run time; for nil, how to give the trigger a default.
fn wrong_operand(
    op: &str,
    wanted: &str,
    which: &str,
    value: &Value,
    column: usize,
) -> FormulaError {
    let hint = if *value == Value::Nil {
        " (a trigger that could not be read is nil under `fallback.behavior: \
         scalingModifiers`; give it a default with `??`, e.g. `(a ?? 0)`)"
    } else {
        ""
    };
    FormulaError::at(
        column,
        format!(
            "`{op}` needs {wanted}, but its {which} is {}{hint}",
            value.describe()
        ),
    )
}

fn number(op: &str, which: &str, value: &Value, column: usize) -> Result<f64> {
    value
        .number()
        .ok_or_else(|| wrong_operand(op, "numbers", which, value, column))
}

fn boolean(op: &str, which: &str, value: &Value, column: usize) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong_operand(op, "booleans", which, other, column)),
    }
}

pub(super) fn eval(node: &Node, scope: Scope<'_>) -> Result<Value> {
    let column = node.column;
    match &node.kind {
        Kind::Literal(value) => Ok(value.clone()),
        Kind::Variable(name) => variable(name, column, scope.values),
        Kind::Element => Ok(scope.element.cloned().unwrap_or(Value::Nil)),
        Kind::Array(elements) => elements
            .iter()
            .map(|e| eval(e, scope))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        Kind::Unary(op, operand) => unary(*op, eval(operand, scope)?, column),
        Kind::Binary(op, lhs, rhs) => eval_binary(*op, lhs, rhs, column, scope),
        Kind::Conditional(condition, then, otherwise) => {
            let c = eval(condition, scope)?;
            match c {
                Value::Bool(true) => eval(then, scope),
                Value::Bool(false) => eval(otherwise, scope),
                other => Err(FormulaError::at(
                    column,
                    format!(
                        "the condition before `?` must be a boolean, but it is {}",
                        other.describe()
                    ),
                )),
            }
        }
        Kind::Call(Function::Count, args) => count(args, column, scope),
        Kind::Call(function, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, scope))
                .collect::<Result<Vec<_>>>()?;
            eval_call(*function, args, column)
        }
    }
}

fn variable(name: &str, column: usize, values: &BTreeMap<String, Option<f64>>) -> Result<Value> {
    match values.get(name) {
        None => {
            let known: Vec<&str> = values.keys().map(String::as_str).collect();
            Err(unknown_variable(name, column, &known))
        }
        Some(None) => Ok(Value::Nil),
        Some(Some(value)) if !value.is_finite() => Err(FormulaError::at(
            column,
            format!("the value of `{name}` is {value}, not a finite number"),
        )),
        Some(Some(value)) => Ok(Value::Float(*value)),
    }
}

fn unary(op: UnaryOp, v: Value, column: usize) -> Result<Value> {
    match (op, v) {
        (UnaryOp::Not, v) => Ok(Value::Bool(!boolean("!", "operand", &v, column)?)),
        (UnaryOp::Neg, Value::Int(i)) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| overflow("-", column)),
        (UnaryOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
        (UnaryOp::Plus, v @ (Value::Int(_) | Value::Float(_))) => Ok(v),
        (op, v) => {
            let symbol = if op == UnaryOp::Neg { "-" } else { "+" };
            Err(wrong_operand(symbol, "numbers", "operand", &v, column))
        }
    }
}

fn eval_binary(
    op: BinaryOp,
    lhs: &Node,
    rhs: &Node,
    column: usize,
    scope: Scope<'_>,
) -> Result<Value> {
    let symbol = op.symbol();
    let l = eval(lhs, scope)?;
    match op {
        // `&&` and `||` short-circuit, as in expr-lang: the right side is not evaluated (and
        // so cannot fail) when the left side decides.
        BinaryOp::And | BinaryOp::Or => {
            let lb = boolean(symbol, "left operand", &l, column)?;
            if lb == (op == BinaryOp::Or) {
                return Ok(Value::Bool(lb));
            }
            let r = eval(rhs, scope)?;
            Ok(Value::Bool(boolean(symbol, "right operand", &r, column)?))
        }
        // The right side only when the left is nil.
        BinaryOp::Coalesce if l == Value::Nil => eval(rhs, scope),
        BinaryOp::Coalesce => Ok(l),
        BinaryOp::Eq | BinaryOp::Ne => {
            let r = eval(rhs, scope)?;
            Ok(Value::Bool(equal(&l, &r) == (op == BinaryOp::Eq)))
        }
        _ => eval_numeric(op, &l, &eval(rhs, scope)?, column),
    }
}

/// `==` as expr-lang's run time has it: an integer equals the same float, nil equals nil, and
/// values of different kinds are not equal.
fn equal(l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y))
        }
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => match (l.number(), r.number()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

/// An ordering or arithmetic operation on two values that must both be numbers.
fn eval_numeric(op: BinaryOp, l: &Value, r: &Value, column: usize) -> Result<Value> {
    let symbol = op.symbol();
    let lf = number(symbol, "left operand", l, column)?;
    let rf = number(symbol, "right operand", r, column)?;
    let ints = match (l, r) {
        (Value::Int(a), Value::Int(b)) => Some((*a, *b)),
        _ => None,
    };
    match op {
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let ordering = match ints {
                Some((a, b)) => a.cmp(&b),
                // No NaN reaches here: inputs are finite and every float result is checked.
                None => lf.total_cmp(&rf),
            };
            Ok(Value::Bool(match op {
                BinaryOp::Lt => ordering.is_lt(),
                BinaryOp::Le => ordering.is_le(),
                BinaryOp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            }))
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => match ints {
            Some((a, b)) => match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Sub => a.checked_sub(b),
                _ => a.checked_mul(b),
            }
            .map(Value::Int)
            .ok_or_else(|| overflow(symbol, column)),
            None => {
                let result = match op {
                    BinaryOp::Add => lf + rf,
                    BinaryOp::Sub => lf - rf,
                    _ => lf * rf,
                };
                finite(result, symbol, column)
            }
        },
        BinaryOp::Div if rf == 0.0 => Err(FormulaError::arithmetic(column, "division by zero")),
        BinaryOp::Div => finite(lf / rf, symbol, column),
        // Go's math.Pow; 0 ** -1 is +Inf there, an error here like every infinity.
        BinaryOp::Pow => finite(lf.powf(rf), symbol, column),
        _ => remainder(l, r, ints, column),
    }
}

fn remainder(l: &Value, r: &Value, ints: Option<(i64, i64)>, column: usize) -> Result<Value> {
    match ints {
        Some((_, 0)) => Err(FormulaError::arithmetic(
            column,
            "modulo by zero (`%` with a right operand of 0)",
        )),
        Some((a, b)) => a
            .checked_rem(b)
            .map(Value::Int)
            .ok_or_else(|| overflow("%", column)),
        None => {
            need_integer(matches!(l, Value::Float(_)), "left operand", column)?;
            need_integer(matches!(r, Value::Float(_)), "right operand", column)?;
            Err(FormulaError::at(column, "`%` needs integers"))
        }
    }
}

/// `count(array)` (the true elements) or `count(array, predicate)`.
fn count(args: &[Node], column: usize, scope: Scope<'_>) -> Result<Value> {
    let collection = match args.first() {
        Some(array) => eval(array, scope)?,
        None => Value::Nil,
    };
    let Value::Array(elements) = collection else {
        return Err(wrong_operand(
            "count",
            "an array",
            "argument 1",
            &collection,
            column,
        ));
    };
    let mut n: i64 = 0;
    for element in &elements {
        let verdict = match args.get(1) {
            Some(predicate) => eval(
                predicate,
                Scope {
                    values: scope.values,
                    element: Some(element),
                },
            )?,
            None => element.clone(),
        };
        if boolean("count", "predicate's result", &verdict, column)? {
            n += 1;
        }
    }
    Ok(Value::Int(n))
}

fn eval_call(function: Function, args: Vec<Value>, column: usize) -> Result<Value> {
    let name = function.name();
    match function {
        Function::Min | Function::Max => min_max(function, args, column),
        _ => {
            let [arg] = <[Value; 1]>::try_from(args).map_err(|args| {
                FormulaError::at(
                    column,
                    format!("`{name}` takes exactly one argument, got {}", args.len()),
                )
            })?;
            let x = number(name, "argument", &arg, column)?;
            Ok(match (function, arg) {
                (Function::Abs, Value::Int(i)) => {
                    Value::Int(i.checked_abs().ok_or_else(|| overflow(name, column))?)
                }
                (Function::Abs, _) => Value::Float(x.abs()),
                (Function::Ceil, _) => Value::Float(x.ceil()),
                (Function::Floor, _) => Value::Float(x.floor()),
                // Go's math.Round: half away from zero, as f64::round.
                (Function::Round, _) => Value::Float(x.round()),
                _ => Value::Float(x),
            })
        }
    }
}

/// `min`/`max` as expr-lang's `minMax`: arrays are flattened, the first of equal values wins,
/// the result keeps its type, nothing to compare gives nil, and a single argument that is
/// neither a number nor an array is returned as it is.
fn min_max(function: Function, args: Vec<Value>, column: usize) -> Result<Value> {
    let name = function.name();
    if let [single] = args.as_slice()
        && !matches!(single, Value::Array(_))
        && single.number().is_none()
    {
        return Ok(single.clone());
    }
    let mut best: Option<Value> = None;
    let mut pending = args;
    pending.reverse();
    while let Some(arg) = pending.pop() {
        if let Value::Array(elements) = arg {
            pending.extend(elements.into_iter().rev());
            continue;
        }
        let Some(x) = arg.number() else {
            return Err(wrong_operand(
                name,
                "numbers or arrays of numbers",
                "argument",
                &arg,
                column,
            ));
        };
        let replace = match best.as_ref().and_then(Value::number) {
            None => true,
            Some(b) => {
                let ordering = match (&arg, best.as_ref()) {
                    (Value::Int(a), Some(Value::Int(b))) => a.cmp(b),
                    _ => x.total_cmp(&b),
                };
                if function == Function::Min {
                    ordering == Ordering::Less
                } else {
                    ordering == Ordering::Greater
                }
            }
        };
        if replace {
            best = Some(arg);
        }
    }
    Ok(best.unwrap_or(Value::Nil))
}
