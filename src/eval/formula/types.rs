//! Static types: expr-lang's compile-time checks, before any value is known.
//!
//! KEDA compiles the formula with every trigger declared a float, so a trigger name is a
//! float here too, even though it may be nil at run time (`fallback.behavior:
//! scalingModifiers`). `nil` and `#` are of unknown type, as in expr-lang, and so is anything
//! that depends on them: those are checked when evaluated.

use super::{FormulaError, Result, ast::*};

/// Static types: what can be known about a value before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Int,
    Float,
    /// An integer or a float (e.g. `cond ? 1 : x`).
    Number,
    Bool,
    Array,
    /// Not known before evaluation (`nil`, `#`, `cond ? 1 : true`).
    Unknown,
}

impl Ty {
    fn of(value: &Value) -> Ty {
        match value {
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Bool(_) => Ty::Bool,
            Value::Array(_) => Ty::Array,
            Value::Nil => Ty::Unknown,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Number)
    }

    fn may_be_numeric(self) -> bool {
        self.is_numeric() || self == Ty::Unknown
    }

    fn may_be_bool(self) -> bool {
        matches!(self, Ty::Bool | Ty::Unknown)
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Int => "an integer",
            Ty::Float => "a float",
            Ty::Number => "a number",
            Ty::Bool => "a boolean",
            Ty::Array => "an array",
            Ty::Unknown => "of a type known only when evaluated",
        }
    }

    /// The type of a value that is either `self` or `other`.
    fn join(self, other: Ty) -> Ty {
        match (self, other) {
            (a, b) if a == b => a,
            (a, b) if a.is_numeric() && b.is_numeric() => Ty::Number,
            _ => Ty::Unknown,
        }
    }

    /// The type of `+ - *` over numeric operands.
    fn arithmetic(self, other: Ty) -> Ty {
        match (self, other) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (Ty::Float, _) | (_, Ty::Float) => Ty::Float,
            _ => Ty::Number,
        }
    }
}

fn need_number(op: &str, ty: Ty, which: &str, column: usize) -> Result<()> {
    if ty.may_be_numeric() {
        return Ok(());
    }
    Err(FormulaError::at(
        column,
        format!("`{op}` needs numbers, but its {which} is {}", ty.name()),
    ))
}

fn need_bool(op: &str, ty: Ty, which: &str, column: usize) -> Result<()> {
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

pub(super) fn need_integer(float: bool, which: &str, column: usize) -> Result<()> {
    if !float {
        return Ok(());
    }
    Err(FormulaError::at(
        column,
        format!(
            "`%` needs integers, but its {which} is a float (trigger values are floats in \
             KEDA, as is every result of `/`, `**`, `float`, `round`, `ceil` and `floor`)"
        ),
    ))
}

/// The static type of `node`, or the first type error (expr-lang's compile-time check).
pub(super) fn check(node: &Node) -> Result<Ty> {
    let column = node.column;
    Ok(match &node.kind {
        Kind::Literal(value) => Ty::of(value),
        // KEDA hands trigger values to the formula as floats.
        Kind::Variable(_) => Ty::Float,
        Kind::Element => Ty::Unknown,
        Kind::Array(elements) => {
            for element in elements {
                check(element)?;
            }
            Ty::Array
        }
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
        Kind::Binary(BinaryOp::Coalesce, lhs, rhs) => {
            let (l, r) = (check(lhs)?, check(rhs)?);
            // `nil ?? x` is x; otherwise either side.
            if lhs.kind == Kind::Literal(Value::Nil) {
                r
            } else {
                l.join(r)
            }
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
        Kind::Call(function, args) => check_call(*function, args, column)?,
    })
}

fn check_call(function: Function, args: &[Node], column: usize) -> Result<Ty> {
    let name = function.name();
    // expr-lang's checker refuses a literal nil where a function takes one number.
    let one_number = !matches!(function, Function::Min | Function::Max | Function::Count);
    if one_number && args.iter().any(|a| a.kind == Kind::Literal(Value::Nil)) {
        return Err(FormulaError::at(
            column,
            format!("`{name}` takes a number, not nil"),
        ));
    }
    let types = args.iter().map(check).collect::<Result<Vec<Ty>>>()?;
    if function == Function::Count {
        return check_count(&types, column);
    }
    let mut result: Option<Ty> = None;
    for (i, &ty) in types.iter().enumerate() {
        let which = format!("argument {}", i + 1);
        let arrays = matches!(function, Function::Min | Function::Max);
        if !(arrays && ty == Ty::Array) {
            need_number(name, ty, &which, column)?;
        }
        let ty = if ty.is_numeric() { ty } else { Ty::Unknown };
        result = Some(match result {
            None => ty,
            // min/max return one of their arguments, unchanged.
            Some(acc) => acc.join(ty),
        });
    }
    Ok(match function {
        Function::Ceil | Function::Floor | Function::Round | Function::Float => Ty::Float,
        Function::Abs => match result {
            Some(ty) if ty.is_numeric() => ty,
            _ => Ty::Number,
        },
        // The parser guarantees at least one argument.
        _ => result.unwrap_or(Ty::Unknown),
    })
}

/// `count(array[, predicate])`: an array, a predicate that gives a boolean; an integer.
fn check_count(types: &[Ty], column: usize) -> Result<Ty> {
    let Some(&collection) = types.first() else {
        return Err(FormulaError::at(
            column,
            "`count` takes an array and a predicate, e.g. `count([a, b], {# > 1})`",
        ));
    };
    if !matches!(collection, Ty::Array | Ty::Unknown) {
        return Err(FormulaError::at(
            column,
            format!(
                "`count` takes an array (`[a, b]`), but its argument 1 is {}",
                collection.name()
            ),
        ));
    }
    if let Some(&predicate) = types.get(1)
        && !predicate.may_be_bool()
    {
        return Err(FormulaError::at(
            column,
            format!(
                "the predicate of `count` must give a boolean (e.g. `{{# > 1}}`), but it gives \
                 {}",
                predicate.name()
            ),
        ));
    }
    Ok(Ty::Int)
}

/// The static type of a binary operation on operands of types `l` and `r`.
fn check_binary(op: BinaryOp, l: Ty, r: Ty, column: usize) -> Result<Ty> {
    let symbol = op.symbol();
    let numbers = |l: Ty, r: Ty| -> Result<()> {
        need_number(symbol, l, "left operand", column)?;
        need_number(symbol, r, "right operand", column)
    };
    let ty = match op {
        BinaryOp::And | BinaryOp::Or => {
            need_bool(symbol, l, "left operand", column)?;
            need_bool(symbol, r, "right operand", column)?;
            Ty::Bool
        }
        BinaryOp::Eq | BinaryOp::Ne => {
            // Arrays compare with arrays (element by element), as in expr-lang.
            let array_mismatch =
                |a: Ty, b: Ty| a == Ty::Array && !matches!(b, Ty::Array | Ty::Unknown);
            let mismatched = (l.is_numeric() && r == Ty::Bool)
                || (l == Ty::Bool && r.is_numeric())
                || array_mismatch(l, r)
                || array_mismatch(r, l);
            if mismatched {
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
            numbers(l, r)?;
            Ty::Bool
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => {
            numbers(l, r)?;
            l.arithmetic(r)
        }
        BinaryOp::Div | BinaryOp::Pow => {
            numbers(l, r)?;
            Ty::Float
        }
        BinaryOp::Rem => {
            numbers(l, r)?;
            need_integer(l == Ty::Float, "left operand", column)?;
            need_integer(r == Ty::Float, "right operand", column)?;
            Ty::Int
        }
        // Typed by `check`.
        BinaryOp::Coalesce => l.join(r),
    };
    Ok(ty)
}
