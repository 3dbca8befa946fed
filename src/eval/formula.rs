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

// === lexer ===

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Ident(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Bang,
    Question,
    Colon,
    LParen,
    RParen,
    Comma,
    End,
}

impl TokenKind {
    /// How the token reads in an error message.
    fn describe(&self) -> String {
        let op = match self {
            TokenKind::Int(i) => return format!("the number `{i}`"),
            TokenKind::Float(f) => return format!("the number `{f}`"),
            TokenKind::Bool(b) => return format!("`{b}`"),
            TokenKind::Ident(name) => return format!("`{name}`"),
            TokenKind::End => return "the end of the formula".to_owned(),
            TokenKind::Plus => "+",
            TokenKind::Minus => "-",
            TokenKind::Star => "*",
            TokenKind::Slash => "/",
            TokenKind::Percent => "%",
            TokenKind::Lt => "<",
            TokenKind::Le => "<=",
            TokenKind::Gt => ">",
            TokenKind::Ge => ">=",
            TokenKind::EqEq => "==",
            TokenKind::Ne => "!=",
            TokenKind::AndAnd => "&&",
            TokenKind::OrOr => "||",
            TokenKind::Bang => "!",
            TokenKind::Question => "?",
            TokenKind::Colon => ":",
            TokenKind::LParen => "(",
            TokenKind::RParen => ")",
            TokenKind::Comma => ",",
        };
        format!("`{op}`")
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    /// 0-based character index.
    column: usize,
}

fn lex(source: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        if let Some(reason) = unsupported(c, next) {
            return Err(FormulaError::at(i, reason));
        }
        let (kind, len) = match c {
            '0'..='9' => {
                let (kind, end) = lex_number(&chars, i)?;
                (kind, end - i)
            }
            c if c.is_ascii_alphabetic() || c == '_' => lex_word(&chars, i),
            c => operator(c, next)
                .ok_or_else(|| FormulaError::at(i, format!("unexpected character {c:?}")))?,
        };
        tokens.push(Token { kind, column: i });
        i += len;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        column: chars.len(),
    });
    Ok(tokens)
}

/// A name or a word operator starting at `start`, and its length.
fn lex_word(chars: &[char], start: usize) -> (TokenKind, usize) {
    let end = (start..chars.len())
        .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'))
        .unwrap_or(chars.len());
    let word: String = chars[start..end].iter().collect();
    let kind = match word.as_str() {
        "true" => TokenKind::Bool(true),
        "false" => TokenKind::Bool(false),
        "and" => TokenKind::AndAnd,
        "or" => TokenKind::OrOr,
        "not" => TokenKind::Bang,
        _ => TokenKind::Ident(word),
    };
    (kind, end - start)
}

/// The operator or punctuation starting with `c` (followed by `next`), and its length.
fn operator(c: char, next: Option<char>) -> Option<(TokenKind, usize)> {
    let two = |kind| Some((kind, 2));
    let one = |kind| Some((kind, 1));
    match (c, next) {
        ('<', Some('=')) => two(TokenKind::Le),
        ('>', Some('=')) => two(TokenKind::Ge),
        ('=', Some('=')) => two(TokenKind::EqEq),
        ('!', Some('=')) => two(TokenKind::Ne),
        ('&', Some('&')) => two(TokenKind::AndAnd),
        ('|', Some('|')) => two(TokenKind::OrOr),
        ('+', _) => one(TokenKind::Plus),
        ('-', _) => one(TokenKind::Minus),
        ('*', _) => one(TokenKind::Star),
        ('/', _) => one(TokenKind::Slash),
        ('%', _) => one(TokenKind::Percent),
        ('<', _) => one(TokenKind::Lt),
        ('>', _) => one(TokenKind::Gt),
        ('!', _) => one(TokenKind::Bang),
        ('?', _) => one(TokenKind::Question),
        (':', _) => one(TokenKind::Colon),
        ('(', _) => one(TokenKind::LParen),
        (')', _) => one(TokenKind::RParen),
        (',', _) => one(TokenKind::Comma),
        _ => None,
    }
}

/// Why the language of KEDA's formulas has `c` (followed by `next`) but this evaluator
/// refuses it, or None when it is not refused here.
fn unsupported(c: char, next: Option<char>) -> Option<&'static str> {
    Some(match (c, next) {
        ('*', Some('*')) => "the power operator `**` is not supported",
        ('=', Some('=')) | ('&', Some('&')) | ('|', Some('|')) => return None,
        ('=', _) => "`=` is not supported (no assignment); compare with `==`",
        ('&', _) => "`&` is not supported; `&&` is (and)",
        ('|', _) => "the pipe operator `|` is not supported",
        ('?', Some('?')) => "the nil-coalescing operator `??` is not supported",
        ('?', Some('.')) => "optional chaining `?.` (member access) is not supported",
        ('^', _) => "the power operator `^` is not supported",
        ('.', Some('.')) => "ranges `..` are not supported",
        ('.', Some(n)) if n.is_ascii_digit() => {
            "a number must start with a digit: write `0.5`, not `.5`"
        }
        ('.', _) => "member access `.` is not supported",
        ('"' | '\'' | '`', _) => {
            "string literals are not supported: a formula computes a number from trigger values"
        }
        ('[' | ']', _) => "arrays and indexing (`[`, `]`) are not supported",
        ('{' | '}', _) => "maps (`{`, `}`) are not supported",
        ('#', _) => "closures and predicates (`#`) are not supported",
        (';', _) => "several expressions (`;`) are not supported",
        ('$', _) => "`$env` and `$` names are not supported",
        _ => return None,
    })
}

/// A number literal starting at `start` (a digit): returns the token and the index after it.
fn lex_number(chars: &[char], start: usize) -> Result<(TokenKind, usize)> {
    let at = |i: usize| chars.get(i).copied();
    if at(start) == Some('0') && matches!(at(start + 1), Some('x' | 'X' | 'o' | 'O' | 'b' | 'B')) {
        return Err(FormulaError::at(
            start,
            "hexadecimal, octal and binary literals are not supported",
        ));
    }
    let mut text = String::new();
    let mut i = start;
    // Digits, with `_` allowed between two digits (`1_000`), as expr-lang does.
    let digits = |i: &mut usize, text: &mut String| {
        while let Some(c) = at(*i) {
            if c.is_ascii_digit() {
                text.push(c);
            } else if c == '_'
                && text.ends_with(|p: char| p.is_ascii_digit())
                && at(*i + 1).is_some_and(|n| n.is_ascii_digit())
            {
                // a separator: skipped
            } else {
                break;
            }
            *i += 1;
        }
    };
    digits(&mut i, &mut text);
    let mut is_float = false;
    if at(i) == Some('.') && at(i + 1).is_some_and(|n| n.is_ascii_digit()) {
        is_float = true;
        text.push('.');
        i += 1;
        digits(&mut i, &mut text);
    }
    if matches!(at(i), Some('e' | 'E')) {
        let sign = matches!(at(i + 1), Some('+' | '-'));
        let first_digit = if sign { i + 2 } else { i + 1 };
        if at(first_digit).is_some_and(|d| d.is_ascii_digit()) {
            is_float = true;
            text.push('e');
            if sign {
                text.extend(at(i + 1));
            }
            i = first_digit;
            digits(&mut i, &mut text);
        }
    }
    let kind = if is_float {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => TokenKind::Float(f),
            _ => {
                return Err(FormulaError::at(
                    start,
                    format!("the number `{text}` is too large"),
                ));
            }
        }
    } else {
        match text.parse::<i64>() {
            Ok(n) => TokenKind::Int(n),
            Err(_) => {
                return Err(FormulaError::at(
                    start,
                    format!(
                        "the integer `{text}` is too large (at most {}); write it as a float \
                         (`{text}.0`)",
                        i64::MAX
                    ),
                ));
            }
        }
    };
    Ok((kind, i))
}

// === syntax tree ===

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnaryOp {
    Neg,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
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
    fn symbol(self) -> &'static str {
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
enum Function {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
}

impl Function {
    fn lookup(name: &str) -> Option<Function> {
        Some(match name {
            "min" => Function::Min,
            "max" => Function::Max,
            "abs" => Function::Abs,
            "ceil" => Function::Ceil,
            "floor" => Function::Floor,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
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
enum Kind {
    Literal(Value),
    Variable(String),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    Call(Function, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    kind: Kind,
    /// 0-based character index of the token the node is about (the operator, the name).
    column: usize,
    /// 1 for a leaf; bounded by [`MAX_DEPTH`].
    depth: usize,
}

impl Node {
    fn leaf(kind: Kind, column: usize) -> Node {
        Node {
            kind,
            column,
            depth: 1,
        }
    }

    /// A node over `children`: refused when the tree would get deeper than [`MAX_DEPTH`].
    fn branch(kind: Kind, column: usize) -> Result<Node> {
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

    fn collect_variables<'a>(&'a self, out: &mut Vec<&'a str>) {
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
    fn first_unknown_variable(&self, known: &[&str]) -> Option<(&str, usize)> {
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

fn too_deep(column0: usize) -> FormulaError {
    FormulaError::at(
        column0,
        format!(
            "the formula is nested too deeply (more than {MAX_DEPTH} levels of operators, \
             parentheses and calls)"
        ),
    )
}

// === parser ===

/// A precedence-climbing parser with expr-lang's precedence, lowest first: `? :`, `||`, `&&`,
/// comparisons (`== != < <= > >=`, one level, left-associative), `+ -`, `* / %`, unary.
struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    /// Current recursion depth of `parse_expr`/`parse_unary`, bounded by [`MAX_DEPTH`].
    depth: usize,
}

fn binary_op(kind: &TokenKind) -> Option<(BinaryOp, u8)> {
    Some(match kind {
        TokenKind::OrOr => (BinaryOp::Or, 1),
        TokenKind::AndAnd => (BinaryOp::And, 2),
        TokenKind::EqEq => (BinaryOp::Eq, 3),
        TokenKind::Ne => (BinaryOp::Ne, 3),
        TokenKind::Lt => (BinaryOp::Lt, 3),
        TokenKind::Le => (BinaryOp::Le, 3),
        TokenKind::Gt => (BinaryOp::Gt, 3),
        TokenKind::Ge => (BinaryOp::Ge, 3),
        TokenKind::Plus => (BinaryOp::Add, 4),
        TokenKind::Minus => (BinaryOp::Sub, 4),
        TokenKind::Star => (BinaryOp::Mul, 5),
        TokenKind::Slash => (BinaryOp::Div, 5),
        TokenKind::Percent => (BinaryOp::Rem, 5),
        _ => return None,
    })
}

/// The error for a token found where an operator, `expected`, could follow an operand.
fn unexpected_after_operand(token: &Token, expected: &str) -> FormulaError {
    if let TokenKind::Ident(word) = &token.kind
        && UNSUPPORTED_OPERATOR_WORDS.contains(&word.as_str())
    {
        return FormulaError::at(
            token.column,
            format!("the operator `{word}` is not supported"),
        );
    }
    FormulaError::at(
        token.column,
        format!(
            "expected an operator or {expected}, found {}",
            token.kind.describe()
        ),
    )
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `End`, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != TokenKind::End {
            self.pos += 1;
        }
        token
    }

    fn enter(&mut self, column: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(too_deep(column));
        }
        Ok(())
    }

    /// expression = binary [ "?" expression ":" expression ]
    fn parse_expr(&mut self) -> Result<Node> {
        self.enter(self.peek().column)?;
        let condition = self.parse_binary(1)?;
        let node = if self.peek().kind == TokenKind::Question {
            let question = self.bump();
            let then = self.parse_expr()?;
            let colon = self.peek();
            if colon.kind != TokenKind::Colon {
                return Err(unexpected_after_operand(
                    colon,
                    "the `:` of the conditional `cond ? a : b`",
                ));
            }
            self.bump();
            let otherwise = self.parse_expr()?;
            Node::branch(
                Kind::Conditional(Box::new(condition), Box::new(then), Box::new(otherwise)),
                question.column,
            )?
        } else {
            condition
        };
        self.depth -= 1;
        Ok(node)
    }

    /// Binary operators of precedence `min_precedence` and above, left-associative.
    fn parse_binary(&mut self, min_precedence: u8) -> Result<Node> {
        let mut lhs = self.parse_unary()?;
        while let Some((op, precedence)) = binary_op(&self.peek().kind) {
            if precedence < min_precedence {
                break;
            }
            let operator = self.bump();
            let rhs = self.parse_binary(precedence + 1)?;
            lhs = Node::branch(
                Kind::Binary(op, Box::new(lhs), Box::new(rhs)),
                operator.column,
            )?;
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> Result<Node> {
        let op = match self.peek().kind {
            TokenKind::Minus => UnaryOp::Neg,
            TokenKind::Plus => UnaryOp::Plus,
            TokenKind::Bang => UnaryOp::Not,
            _ => return self.parse_primary(),
        };
        let operator = self.bump();
        self.enter(operator.column)?;
        let operand = self.parse_unary()?;
        self.depth -= 1;
        Node::branch(Kind::Unary(op, Box::new(operand)), operator.column)
    }

    fn parse_primary(&mut self) -> Result<Node> {
        let token = self.bump();
        match token.kind {
            TokenKind::Int(i) => Ok(Node::leaf(Kind::Literal(Value::Int(i)), token.column)),
            TokenKind::Float(f) => Ok(Node::leaf(Kind::Literal(Value::Float(f)), token.column)),
            TokenKind::Bool(b) => Ok(Node::leaf(Kind::Literal(Value::Bool(b)), token.column)),
            TokenKind::Ident(name) => {
                if self.peek().kind == TokenKind::LParen {
                    return self.parse_call(&name, token.column);
                }
                if UNSUPPORTED_KEYWORDS.contains(&name.as_str()) {
                    return Err(FormulaError::at(
                        token.column,
                        format!("`{name}` is not supported"),
                    ));
                }
                if UNSUPPORTED_OPERATOR_WORDS.contains(&name.as_str()) {
                    return Err(FormulaError::at(
                        token.column,
                        format!("the operator `{name}` is not supported"),
                    ));
                }
                Ok(Node::leaf(Kind::Variable(name), token.column))
            }
            TokenKind::LParen => {
                let inner = self.parse_expr()?;
                let close = self.peek();
                if close.kind != TokenKind::RParen {
                    return Err(unexpected_after_operand(close, "a closing `)`"));
                }
                self.bump();
                Ok(inner)
            }
            other => Err(FormulaError::at(
                token.column,
                format!(
                    "expected a number, a trigger name, a function call or `(`, found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// `name(args)`, with the `(` next.
    fn parse_call(&mut self, name: &str, column: usize) -> Result<Node> {
        let function = Function::lookup(name).ok_or_else(|| {
            FormulaError::at(
                column,
                format!("unknown function `{name}`; supported: {FUNCTIONS}"),
            )
        })?;
        self.bump(); // `(`
        let mut args = Vec::new();
        if self.peek().kind == TokenKind::RParen {
            self.bump();
        } else {
            loop {
                args.push(self.parse_expr()?);
                let separator = self.peek();
                match separator.kind {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RParen => {
                        self.bump();
                        break;
                    }
                    _ => {
                        return Err(unexpected_after_operand(
                            separator,
                            format!("`,` or the closing `)` of `{name}(`").as_str(),
                        ));
                    }
                }
            }
        }
        let arity_ok = match function {
            Function::Min | Function::Max => !args.is_empty(),
            Function::Abs | Function::Ceil | Function::Floor => args.len() == 1,
        };
        if !arity_ok {
            let wanted = match function {
                Function::Min | Function::Max => "one or more arguments",
                _ => "exactly one argument",
            };
            return Err(FormulaError::at(
                column,
                format!("`{name}` takes {wanted}, got {}", args.len()),
            ));
        }
        Node::branch(Kind::Call(function, args), column)
    }
}

// === types ===

/// Static types: what can be known about a value before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Float,
    /// An integer or a float (e.g. `cond ? 1 : x`).
    Number,
    Bool,
    /// A number or a boolean (e.g. `cond ? 1 : true`): checked at evaluation.
    Unknown,
}

impl Ty {
    fn of(value: Value) -> Ty {
        match value {
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Bool(_) => Ty::Bool,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Number)
    }

    fn may_be_numeric(self) -> bool {
        self != Ty::Bool
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
            Ty::Unknown => "a number or a boolean",
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

    /// The type of `+ - *` (and `min`/`max`) over numeric operands.
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

fn need_integer(ty: Ty, which: &str, column: usize) -> Result<()> {
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
fn check(node: &Node) -> Result<Ty> {
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
fn check_binary(op: BinaryOp, l: Ty, r: Ty, column: usize) -> Result<Ty> {
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

// === evaluation ===

fn as_f64(value: Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        Value::Bool(_) => None,
    }
}

/// A float result, refused when it left the finite range.
fn finite(f: f64, op: &str, column: usize) -> Result<Value> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        Err(FormulaError::at(
            column,
            format!("`{op}` overflows: the result is too large for a number"),
        ))
    }
}

fn overflow(op: &str, column: usize) -> FormulaError {
    FormulaError::at(
        column,
        format!("`{op}` overflows the integer range; use floats (`2.0`) for large values"),
    )
}

fn eval(node: &Node, values: &BTreeMap<String, f64>) -> Result<Value> {
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

fn eval_binary(
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
fn equal(l: Value, r: Value, symbol: &str, column: usize) -> Result<bool> {
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
fn eval_numeric(op: BinaryOp, l: Value, r: Value, column: usize) -> Result<Value> {
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

fn eval_call(function: Function, args: &[Value], column: usize) -> Result<Value> {
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

#[cfg(test)]
mod tests;
