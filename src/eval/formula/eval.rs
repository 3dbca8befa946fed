//! Evaluation of a checked tree against trigger values.

use std::collections::BTreeMap;

use super::{
    FormulaError, Result,
    ast::*,
    types::{Ty, need_bool, need_integer, need_number},
    unknown_variable,
};

pub(super) fn as_f64(value: Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        Value::Bool(_) => None,
    }
}

/// A float result, refused when it left the finite range.
pub(super) fn finite(f: f64, op: &str, column: usize) -> Result<Value> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        Err(FormulaError::at(
            column,
            format!("`{op}` overflows: the result is too large for a number"),
        ))
    }
}

pub(super) fn overflow(op: &str, column: usize) -> FormulaError {
    FormulaError::at(
        column,
        format!("`{op}` overflows the integer range; use floats (`2.0`) for large values"),
    )
}

pub(super) fn eval(node: &Node, values: &BTreeMap<String, f64>) -> Result<Value> {
    let column = node.column;
    match &node.kind {
        Kind::Literal(value) => Ok(*value),
        Kind::Variable(name) => {
            let Some(&value) = values.get(name) else {
                let known: Vec<&str> = values.keys().map(String::as_str).collect();
                return Err(unknown_variable(name, column, &known));
            };
            if !value.is_finite() {
                return Err(FormulaError::at(
                    column,
                    format!("the value of `{name}` is {value}, not a finite number"),
                ));
            }
            Ok(Value::Float(value))
        }
        Kind::Unary(op, operand) => {
            let v = eval(operand, values)?;
            match (op, v) {
                (UnaryOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                (UnaryOp::Neg, Value::Int(i)) => i
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or_else(|| overflow("-", column)),
                (UnaryOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                (UnaryOp::Plus, Value::Int(_) | Value::Float(_)) => Ok(v),
                (UnaryOp::Not, _) => need_bool("!", Ty::of(v), "operand", column).map(|_| v),
                (UnaryOp::Neg, _) => need_number("-", Ty::of(v), "operand", column).map(|_| v),
                (UnaryOp::Plus, _) => need_number("+", Ty::of(v), "operand", column).map(|_| v),
            }
        }
        Kind::Binary(op, lhs, rhs) => eval_binary(*op, lhs, rhs, column, values),
        Kind::Conditional(condition, then, otherwise) => match eval(condition, values)? {
            Value::Bool(true) => eval(then, values),
            Value::Bool(false) => eval(otherwise, values),
            other => Err(FormulaError::at(
                column,
                format!(
                    "the condition before `?` must be a boolean, but it is {}",
                    Ty::of(other).name()
                ),
            )),
        },
        Kind::Call(function, args) => {
            let mut evaluated = Vec::with_capacity(args.len());
            for (i, arg) in args.iter().enumerate() {
                let v = eval(arg, values)?;
                let which = format!("argument {}", i + 1);
                need_number(function.name(), Ty::of(v), &which, column)?;
                evaluated.push(v);
            }
            eval_call(*function, &evaluated, column)
        }
    }
}

pub(super) fn eval_binary(
    op: BinaryOp,
    lhs: &Node,
    rhs: &Node,
    column: usize,
    values: &BTreeMap<String, f64>,
) -> Result<Value> {
    let symbol = op.symbol();
    let l = eval(lhs, values)?;
    // `&&` and `||` short-circuit, as in expr-lang: the right side is not evaluated (and so
    // cannot fail) when the left side decides.
    if let BinaryOp::And | BinaryOp::Or = op {
        let Value::Bool(lb) = l else {
            return need_bool(symbol, Ty::of(l), "left operand", column).map(|_| l);
        };
        if (op == BinaryOp::And && !lb) || (op == BinaryOp::Or && lb) {
            return Ok(Value::Bool(lb));
        }
        let r = eval(rhs, values)?;
        return match r {
            Value::Bool(_) => Ok(r),
            _ => need_bool(symbol, Ty::of(r), "right operand", column).map(|_| r),
        };
    }
    let r = eval(rhs, values)?;
    if let BinaryOp::Eq | BinaryOp::Ne = op {
        let equal = equal(l, r, symbol, column)?;
        return Ok(Value::Bool(equal == (op == BinaryOp::Eq)));
    }
    eval_numeric(op, l, r, column)
}

/// `==` on two values: numbers with numbers (an int equals the same float), booleans with
/// booleans.
pub(super) fn equal(l: Value, r: Value, symbol: &str, column: usize) -> Result<bool> {
    Ok(match (l, r) {
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Bool(_), _) | (_, Value::Bool(_)) => {
            return Err(FormulaError::at(
                column,
                format!(
                    "`{symbol}` compares {} with {}; both sides must be numbers or both \
                     booleans",
                    Ty::of(l).name(),
                    Ty::of(r).name()
                ),
            ));
        }
        (a, b) => as_f64(a) == as_f64(b),
    })
}

/// An ordering or arithmetic operation on two values that must both be numbers.
pub(super) fn eval_numeric(op: BinaryOp, l: Value, r: Value, column: usize) -> Result<Value> {
    let symbol = op.symbol();
    need_number(symbol, Ty::of(l), "left operand", column)?;
    need_number(symbol, Ty::of(r), "right operand", column)?;
    // Both are numbers from here on.
    let (lf, rf) = (as_f64(l).unwrap_or(0.0), as_f64(r).unwrap_or(0.0));
    match op {
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let ordering = match (l, r) {
                (Value::Int(a), Value::Int(b)) => a.cmp(&b),
                // No NaN reaches here: inputs are finite and every float result is checked.
                _ => lf.total_cmp(&rf),
            };
            let result = match op {
                BinaryOp::Lt => ordering.is_lt(),
                BinaryOp::Le => ordering.is_le(),
                BinaryOp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            };
            Ok(Value::Bool(result))
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => match (l, r) {
            (Value::Int(a), Value::Int(b)) => {
                let result = match op {
                    BinaryOp::Add => a.checked_add(b),
                    BinaryOp::Sub => a.checked_sub(b),
                    _ => a.checked_mul(b),
                };
                result
                    .map(Value::Int)
                    .ok_or_else(|| overflow(symbol, column))
            }
            _ => {
                let result = match op {
                    BinaryOp::Add => lf + rf,
                    BinaryOp::Sub => lf - rf,
                    _ => lf * rf,
                };
                finite(result, symbol, column)
            }
        },
        BinaryOp::Div => {
            if rf == 0.0 {
                return Err(FormulaError::at(column, "division by zero"));
            }
            finite(lf / rf, symbol, column)
        }
        BinaryOp::Rem => match (l, r) {
            (Value::Int(_), Value::Int(0)) => Err(FormulaError::at(
                column,
                "modulo by zero (`%` with a right operand of 0)",
            )),
            (Value::Int(a), Value::Int(b)) => a
                .checked_rem(b)
                .map(Value::Int)
                .ok_or_else(|| overflow(symbol, column)),
            (Value::Float(_), _) => need_integer(Ty::Float, "left operand", column).map(|_| l),
            _ => need_integer(Ty::Float, "right operand", column).map(|_| r),
        },
        // Handled above.
        BinaryOp::And | BinaryOp::Or | BinaryOp::Eq | BinaryOp::Ne => Ok(l),
    }
}

pub(super) fn eval_call(function: Function, args: &[Value], column: usize) -> Result<Value> {
    let name = function.name();
    match function {
        Function::Min | Function::Max => {
            let mut best: Option<Value> = None;
            for &arg in args {
                best = Some(match best {
                    None => arg,
                    Some(current) => {
                        let ordering = match (current, arg) {
                            (Value::Int(a), Value::Int(b)) => b.cmp(&a),
                            _ => {
                                let (a, b) = (as_f64(current), as_f64(arg));
                                b.unwrap_or(0.0).total_cmp(&a.unwrap_or(0.0))
                            }
                        };
                        let replace = match function {
                            Function::Min => ordering.is_lt(),
                            _ => ordering.is_gt(),
                        };
                        if replace { arg } else { current }
                    }
                });
            }
            best.ok_or_else(|| {
                FormulaError::at(column, format!("`{name}` takes one or more arguments"))
            })
        }
        Function::Abs | Function::Ceil | Function::Floor => {
            let [arg] = args else {
                return Err(FormulaError::at(
                    column,
                    format!("`{name}` takes exactly one argument, got {}", args.len()),
                ));
            };
            match (function, *arg) {
                (Function::Abs, Value::Int(i)) => i
                    .checked_abs()
                    .map(Value::Int)
                    .ok_or_else(|| overflow(name, column)),
                (Function::Abs, Value::Float(f)) => Ok(Value::Float(f.abs())),
                (Function::Ceil, v) => Ok(Value::Float(as_f64(v).unwrap_or(0.0).ceil())),
                (_, v) => Ok(Value::Float(as_f64(v).unwrap_or(0.0).floor())),
            }
        }
    }
}
