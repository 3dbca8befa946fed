//! The syntax tree: values, operators, functions and nodes with their columns and depth.

use super::{FormulaError, MAX_DEPTH, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnaryOp {
    Neg,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinaryOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
}

impl Function {
    pub(super) fn lookup(name: &str) -> Option<Function> {
        Some(match name {
            "min" => Function::Min,
            "max" => Function::Max,
            "abs" => Function::Abs,
            "ceil" => Function::Ceil,
            "floor" => Function::Floor,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Function::Min => "min",
            Function::Max => "max",
            Function::Abs => "abs",
            Function::Ceil => "ceil",
            Function::Floor => "floor",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Literal(Value),
    Variable(String),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    Call(Function, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) kind: Kind,
    /// 0-based character index of the token the node is about (the operator, the name).
    pub(super) column: usize,
    /// 1 for a leaf; bounded by [`MAX_DEPTH`].
    pub(super) depth: usize,
}

impl Node {
    pub(super) fn leaf(kind: Kind, column: usize) -> Node {
        Node {
            kind,
            column,
            depth: 1,
        }
    }

    /// A node over `children`: refused when the tree would get deeper than [`MAX_DEPTH`].
    pub(super) fn branch(kind: Kind, column: usize) -> Result<Node> {
        let children_depth = match &kind {
            Kind::Literal(_) | Kind::Variable(_) => 0,
            Kind::Unary(_, a) => a.depth,
            Kind::Binary(_, a, b) => a.depth.max(b.depth),
            Kind::Conditional(a, b, c) => a.depth.max(b.depth).max(c.depth),
            Kind::Call(_, args) => args.iter().map(|a| a.depth).max().unwrap_or(0),
        };
        let depth = children_depth + 1;
        if depth > MAX_DEPTH {
            return Err(too_deep(column));
        }
        Ok(Node {
            kind,
            column,
            depth,
        })
    }

    pub(super) fn collect_variables<'a>(&'a self, out: &mut Vec<&'a str>) {
        match &self.kind {
            Kind::Literal(_) => {}
            Kind::Variable(name) => out.push(name),
            Kind::Unary(_, a) => a.collect_variables(out),
            Kind::Binary(_, a, b) => {
                a.collect_variables(out);
                b.collect_variables(out);
            }
            Kind::Conditional(a, b, c) => {
                a.collect_variables(out);
                b.collect_variables(out);
                c.collect_variables(out);
            }
            Kind::Call(_, args) => args.iter().for_each(|a| a.collect_variables(out)),
        }
    }

    /// The leftmost variable not in `known`.
    pub(super) fn first_unknown_variable(&self, known: &[&str]) -> Option<(&str, usize)> {
        match &self.kind {
            Kind::Literal(_) => None,
            Kind::Variable(name) => {
                (!known.contains(&name.as_str())).then_some((name.as_str(), self.column))
            }
            Kind::Unary(_, a) => a.first_unknown_variable(known),
            Kind::Binary(_, a, b) => a
                .first_unknown_variable(known)
                .or_else(|| b.first_unknown_variable(known)),
            Kind::Conditional(a, b, c) => a
                .first_unknown_variable(known)
                .or_else(|| b.first_unknown_variable(known))
                .or_else(|| c.first_unknown_variable(known)),
            Kind::Call(_, args) => args.iter().find_map(|a| a.first_unknown_variable(known)),
        }
    }
}

pub(super) fn too_deep(column0: usize) -> FormulaError {
    FormulaError::at(
        column0,
        format!(
            "the formula is nested too deeply (more than {MAX_DEPTH} levels of operators, \
             parentheses and calls)"
        ),
    )
}
