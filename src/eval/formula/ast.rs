//! The syntax tree: values, operators, functions and nodes with their columns and depth.

use super::{FormulaError, MAX_DEPTH, MAX_NODES, Result};

/// A value during evaluation; literals are the scalars.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// A trigger that could not be read (`fallback.behavior: scalingModifiers`), or `nil`.
    Nil,
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
}

impl Value {
    /// How the value reads in an error message.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
        }
    }

    /// The number, for integers and floats.
    pub(super) fn number(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
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
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Coalesce,
}

impl BinaryOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Pow => "**",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
            BinaryOp::Coalesce => "??",
        }
    }

    /// `< <= > >=`: the operators expr-lang chains (`a < b < c` is `a < b && b < c`).
    pub(super) fn is_ordering(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
    Round,
    Float,
    Count,
}

impl Function {
    pub(super) fn lookup(name: &str) -> Option<Function> {
        Some(match name {
            "min" => Function::Min,
            "max" => Function::Max,
            "abs" => Function::Abs,
            "ceil" => Function::Ceil,
            "floor" => Function::Floor,
            "round" => Function::Round,
            "float" => Function::Float,
            "count" => Function::Count,
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
            Function::Round => "round",
            Function::Float => "float",
            Function::Count => "count",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Literal(Value),
    Variable(String),
    /// `#`: the element a predicate is applied to.
    Element,
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    /// `count`'s arguments are the array and, optionally, the predicate.
    Call(Function, Vec<Node>),
    Array(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) kind: Kind,
    /// 0-based character index of the token the node is about (the operator, the name).
    pub(super) column: usize,
    /// 1 for a leaf; bounded by [`MAX_DEPTH`].
    pub(super) depth: usize,
    /// Nodes in this subtree, itself included; bounded by [`MAX_NODES`].
    pub(super) size: usize,
}

impl Node {
    pub(super) fn leaf(kind: Kind, column: usize) -> Node {
        Node {
            kind,
            column,
            depth: 1,
            size: 1,
        }
    }

    /// A node over `children`: refused when the tree would get deeper than [`MAX_DEPTH`].
    pub(super) fn branch(kind: Kind, column: usize) -> Result<Node> {
        let mut node = Node::leaf(kind, column);
        let children = node.children();
        let depth = children.iter().map(|c| c.depth).max().unwrap_or(0) + 1;
        let size = children.iter().map(|c| c.size).sum::<usize>() + 1;
        if depth > MAX_DEPTH {
            return Err(too_deep(column));
        }
        if size > MAX_NODES {
            return Err(FormulaError::at(
                column,
                format!("the formula is too large (more than {MAX_NODES} operators and operands)"),
            ));
        }
        (node.depth, node.size) = (depth, size);
        Ok(node)
    }

    /// The direct children, left to right.
    pub(super) fn children(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::Literal(_) | Kind::Variable(_) | Kind::Element => Vec::new(),
            Kind::Unary(_, a) => vec![a],
            Kind::Binary(_, a, b) => vec![a, b],
            Kind::Conditional(a, b, c) => vec![a, b, c],
            Kind::Call(_, args) | Kind::Array(args) => args.iter().collect(),
        }
    }

    pub(super) fn collect_variables<'a>(&'a self, out: &mut Vec<&'a str>) {
        if let Kind::Variable(name) = &self.kind {
            out.push(name);
        }
        self.children()
            .into_iter()
            .for_each(|c| c.collect_variables(out));
    }

    /// The leftmost variable not in `known`.
    pub(super) fn first_unknown_variable(&self, known: &[&str]) -> Option<(&str, usize)> {
        if let Kind::Variable(name) = &self.kind {
            return (!known.contains(&name.as_str())).then_some((name.as_str(), self.column));
        }
        self.children()
            .into_iter()
            .find_map(|c| c.first_unknown_variable(known))
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
