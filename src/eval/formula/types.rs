//! Static types: expr-lang's compile-time checks, before any value is known.

use super::{FormulaError, Result, ast::*};

/// Static types: what can be known about a value before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Int,
    Float,
    /// An integer or a float (e.g. `cond ? 1 : x`).
    Number,
    Bool,
    /// A number or a boolean (e.g. `cond ? 1 : true`): checked at evaluation.
    Unknown,
}

impl Ty {
    pub(super) fn of(value: Value) -> Ty {
        match value {
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Bool(_) => Ty::Bool,
        }
    }

    pub(super) fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Number)
    }

    pub(super) fn may_be_numeric(self) -> bool {
        self != Ty::Bool
    }

    pub(super) fn may_be_bool(self) -> bool {
        matches!(self, Ty::Bool | Ty::Unknown)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Float => "a float",
            Ty::Number => "a number",
            Ty::Bool => "a boolean",
            Ty::Unknown => "a number or a boolean",
        }
    }

    /// The type of a value that is either `self` or `other`.
    pub(super) fn join(self, other: Ty) -> Ty {
        match (self, other) {
            (a, b) if a == b => a,
            (a, b) if a.is_numeric() && b.is_numeric() => Ty::Number,
            _ => Ty::Unknown,
        }
    }

    /// The type of `+ - *` (and `min`/`max`) over numeric operands.
    pub(super) fn arithmetic(self, other: Ty) -> Ty {
        match (self, other) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (Ty::Float, _) | (_, Ty::Float) => Ty::Float,
            _ => Ty::Number,
        }
    }
}

pub(super) fn need_number(op: &str, ty: Ty, which: &str, column: usize) -> Result<()> {
    if ty.may_be_numeric() {
        return Ok(());
    }
    Err(FormulaError::at(
        column,
        format!("`{op}` needs numbers, but its {which} is {}", ty.name()),
    ))
}

pub(super) fn need_bool(op: &str, ty: Ty, which: &str, column: usize) -> Result<()> {
    if ty.may_be_bool() {
        return Ok(());
    }
    Err(FormulaError::at(
        column,
        format!(
            "`{op}` needs booleans (a comparison such as `a > 2`), but its {which} is {}",
            ty.name()
        ),
    ))
}

pub(super) fn need_integer(ty: Ty, which: &str, column: usize) -> Result<()> {
    if ty != Ty::Float {
        return Ok(());
    }
    Err(FormulaError::at(
        column,
        format!(
            "`%` needs integers, but its {which} is a float (trigger values are floats in \
             KEDA, as is every result of `/`, `ceil` and `floor`)"
        ),
    ))
}

/// The static type of `node`, or the first type error (expr-lang's compile-time check).
pub(super) fn check(node: &Node) -> Result<Ty> {
    let column = node.column;
    Ok(match &node.kind {
        Kind::Literal(value) => Ty::of(*value),
        // KEDA hands trigger values to the formula as floats.
        Kind::Variable(_) => Ty::Float,
        Kind::Unary(UnaryOp::Not, operand) => {
            need_bool("!", check(operand)?, "operand", column)?;
            Ty::Bool
        }
        Kind::Unary(op, operand) => {
            let ty = check(operand)?;
            let symbol = if *op == UnaryOp::Neg { "-" } else { "+" };
            need_number(symbol, ty, "operand", column)?;
            if ty == Ty::Unknown { Ty::Number } else { ty }
        }
        Kind::Binary(op, lhs, rhs) => check_binary(*op, check(lhs)?, check(rhs)?, column)?,
        Kind::Conditional(condition, then, otherwise) => {
            let c = check(condition)?;
            if !c.may_be_bool() {
                return Err(FormulaError::at(
                    column,
                    format!(
                        "the condition before `?` must be a boolean (a comparison such as \
                         `a > 2`), but it is {}",
                        c.name()
                    ),
                ));
            }
            check(then)?.join(check(otherwise)?)
        }
        Kind::Call(function, args) => {
            let mut result: Option<Ty> = None;
            for (i, arg) in args.iter().enumerate() {
                let ty = check(arg)?;
                let which = format!("argument {}", i + 1);
                need_number(function.name(), ty, &which, column)?;
                let ty = if ty == Ty::Unknown { Ty::Number } else { ty };
                result = Some(match result {
                    None => ty,
                    // min/max return one of their arguments, unchanged.
                    Some(acc) => acc.join(ty),
                });
            }
            match function {
                Function::Ceil | Function::Floor => Ty::Float,
                // The parser guarantees at least one argument.
                _ => result.unwrap_or(Ty::Number),
            }
        }
    })
}

/// The static type of a binary operation on operands of types `l` and `r`.
pub(super) fn check_binary(op: BinaryOp, l: Ty, r: Ty, column: usize) -> Result<Ty> {
    let symbol = op.symbol();
    let ty = match op {
        BinaryOp::And | BinaryOp::Or => {
            need_bool(symbol, l, "left operand", column)?;
            need_bool(symbol, r, "right operand", column)?;
            Ty::Bool
        }
        BinaryOp::Eq | BinaryOp::Ne => {
            if (l.is_numeric() && r == Ty::Bool) || (l == Ty::Bool && r.is_numeric()) {
                return Err(FormulaError::at(
                    column,
                    format!(
                        "`{symbol}` compares {} with {}; both sides must be numbers \
                         or both booleans",
                        l.name(),
                        r.name()
                    ),
                ));
            }
            Ty::Bool
        }
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            need_number(symbol, l, "left operand", column)?;
            need_number(symbol, r, "right operand", column)?;
            Ty::Bool
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => {
            need_number(symbol, l, "left operand", column)?;
            need_number(symbol, r, "right operand", column)?;
            l.arithmetic(r)
        }
        BinaryOp::Div => {
            need_number(symbol, l, "left operand", column)?;
            need_number(symbol, r, "right operand", column)?;
            Ty::Float
        }
        BinaryOp::Rem => {
            need_number(symbol, l, "left operand", column)?;
            need_number(symbol, r, "right operand", column)?;
            need_integer(l, "left operand", column)?;
            need_integer(r, "right operand", column)?;
            Ty::Int
        }
    };
    Ok(ty)
}
