//! Tokens → syntax tree, the way expr-lang's parser builds it.
//!
//! Precedence climbing with expr-lang's table (`parser/operator/operator.go`), lowest first:
//! `? :` (0), `||` (10), `&&` (15), comparisons `== != < <= > >=` (20), `+ -` (30),
//! `* / %` (60), `**`/`^` (100, right-associative), `??` (500). Unary `!` binds at 50 and
//! unary `-`/`+` at 90, so `-a ** 2` is `-(a ** 2)` and `!a && b` is `(!a) && b`.
//!
//! Two rules of expr-lang's parser are replayed as it has them: a chain of `< <= > >=` is a
//! conjunction (`a < b < c` is `a < b && b < c`; `==`/`!=` do not chain), and an operator may
//! not follow a `??` chain without parentheses (`a ?? b + 1` is refused).

use super::{
    FUNCTIONS, FormulaError, MAX_DEPTH, Result, UNSUPPORTED_KEYWORDS, UNSUPPORTED_OPERATOR_WORDS,
    ast::*,
    lexer::{Token, TokenKind},
};

/// Unary `!`/`not` binds tighter than comparisons, looser than arithmetic.
const NOT_PRECEDENCE: u16 = 50;
/// Unary `-`/`+` bind tighter than `*`, looser than `**` and `??`.
const SIGN_PRECEDENCE: u16 = 90;

pub(super) struct Parser<'t> {
    pub(super) tokens: &'t [Token],
    pub(super) pos: usize,
    /// Current recursion depth of `parse_expression`, bounded by [`MAX_DEPTH`].
    pub(super) depth: usize,
    /// How many predicates (`{# > 1}`) enclose the current position: `#` is valid inside one.
    pub(super) predicates: usize,
}

/// A binary operator token: the operator, its precedence, and whether it is right-associative.
fn binary_op(kind: &TokenKind) -> Option<(BinaryOp, u16, bool)> {
    Some(match kind {
        TokenKind::OrOr => (BinaryOp::Or, 10, false),
        TokenKind::AndAnd => (BinaryOp::And, 15, false),
        TokenKind::EqEq => (BinaryOp::Eq, 20, false),
        TokenKind::Ne => (BinaryOp::Ne, 20, false),
        TokenKind::Lt => (BinaryOp::Lt, 20, false),
        TokenKind::Le => (BinaryOp::Le, 20, false),
        TokenKind::Gt => (BinaryOp::Gt, 20, false),
        TokenKind::Ge => (BinaryOp::Ge, 20, false),
        TokenKind::Plus => (BinaryOp::Add, 30, false),
        TokenKind::Minus => (BinaryOp::Sub, 30, false),
        TokenKind::Star => (BinaryOp::Mul, 60, false),
        TokenKind::Slash => (BinaryOp::Div, 60, false),
        TokenKind::Percent => (BinaryOp::Rem, 60, false),
        TokenKind::Pow(_) => (BinaryOp::Pow, 100, true),
        TokenKind::Coalesce => (BinaryOp::Coalesce, 500, false),
        _ => return None,
    })
}

/// The error for a token found where an operator, `expected`, could follow an operand.
pub(super) fn unexpected_after_operand(token: &Token, expected: &str) -> FormulaError {
    let unsupported = match &token.kind {
        TokenKind::Ident(word) if UNSUPPORTED_OPERATOR_WORDS.contains(&word.as_str()) => {
            format!("the operator `{word}` is not supported")
        }
        TokenKind::LBracket => "indexing (`a[0]`) is not supported".to_owned(),
        _ => format!(
            "expected an operator or {expected}, found {}",
            token.kind.describe()
        ),
    };
    FormulaError::at(token.column, unsupported)
}

impl Parser<'_> {
    pub(super) fn new(tokens: &[Token]) -> Parser<'_> {
        Parser {
            tokens,
            pos: 0,
            depth: 0,
            predicates: 0,
        }
    }

    pub(super) fn peek(&self) -> &Token {
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

    /// Consumes `kind`, or says what was found instead.
    fn expect(&mut self, kind: TokenKind, expected: &str) -> Result<Token> {
        if self.peek().kind != kind {
            return Err(unexpected_after_operand(self.peek(), expected));
        }
        Ok(self.bump())
    }

    /// expression = operand { binary-operator operand } [ "?" expression ":" expression ],
    /// with operators of precedence `min` and above (the conditional only at 0).
    pub(super) fn parse_expression(&mut self, min: u16) -> Result<Node> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(super::ast::too_deep(self.peek().column));
        }
        let mut lhs = self.parse_primary()?;
        let mut previous = None;
        while let Some((op, precedence, right)) = binary_op(&self.peek().kind) {
            if precedence < min {
                break;
            }
            let token = self.bump();
            if previous == Some(BinaryOp::Coalesce) && op != BinaryOp::Coalesce {
                return Err(FormulaError::at(
                    token.column,
                    format!(
                        "`{}` cannot follow a `??` chain: wrap either in parentheses, e.g. \
                         `(a ?? b) {} 1`",
                        op.symbol(),
                        op.symbol()
                    ),
                ));
            }
            lhs = if op.is_ordering() {
                self.parse_comparison(lhs, op, token.column, precedence)?
            } else {
                let rhs = self.parse_expression(if right { precedence } else { precedence + 1 })?;
                Node::branch(Kind::Binary(op, Box::new(lhs), Box::new(rhs)), token.column)?
            };
            previous = Some(op);
        }
        if min == 0 && self.peek().kind == TokenKind::Question {
            lhs = self.parse_conditional(lhs)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// `a < b <= c ...` after `a <`: each comparison shares its operands with its neighbours
    /// and the comparisons are joined by `&&`, as expr-lang's `parseComparison` does.
    fn parse_comparison(
        &mut self,
        mut left: Node,
        mut op: BinaryOp,
        mut column: usize,
        precedence: u16,
    ) -> Result<Node> {
        let mut chain: Option<Node> = None;
        loop {
            let right = self.parse_expression(precedence + 1)?;
            let comparison = Node::branch(
                Kind::Binary(op, Box::new(left), Box::new(right.clone())),
                column,
            )?;
            chain = Some(match chain {
                None => comparison,
                Some(before) => Node::branch(
                    Kind::Binary(BinaryOp::And, Box::new(before), Box::new(comparison)),
                    column,
                )?,
            });
            left = right;
            match binary_op(&self.peek().kind) {
                Some((next, _, _)) if next.is_ordering() => {
                    op = next;
                    column = self.bump().column;
                }
                _ => break,
            }
        }
        // The loop runs at least once.
        chain.ok_or_else(|| FormulaError::at(column, "empty comparison"))
    }

    /// `cond ? a : b`, or expr-lang's short form `cond ?: b` (`cond ? cond : b`), with the `?`
    /// next.
    fn parse_conditional(&mut self, condition: Node) -> Result<Node> {
        let question = self.bump();
        let then = if self.peek().kind == TokenKind::Colon {
            condition.clone()
        } else {
            let then = self.parse_expression(0)?;
            if self.peek().kind != TokenKind::Colon {
                return Err(unexpected_after_operand(
                    self.peek(),
                    "the `:` of the conditional `cond ? a : b`",
                ));
            }
            then
        };
        self.bump(); // `:`
        let otherwise = self.parse_expression(0)?;
        Node::branch(
            Kind::Conditional(Box::new(condition), Box::new(then), Box::new(otherwise)),
            question.column,
        )
    }

    fn parse_primary(&mut self) -> Result<Node> {
        let (op, precedence) = match self.peek().kind {
            TokenKind::Minus => (UnaryOp::Neg, SIGN_PRECEDENCE),
            TokenKind::Plus => (UnaryOp::Plus, SIGN_PRECEDENCE),
            TokenKind::Bang => (UnaryOp::Not, NOT_PRECEDENCE),
            _ => return self.parse_operand(),
        };
        let operator = self.bump();
        let operand = self.parse_expression(precedence)?;
        Node::branch(Kind::Unary(op, Box::new(operand)), operator.column)
    }

    fn parse_operand(&mut self) -> Result<Node> {
        let token = self.bump();
        let leaf = |value| Ok(Node::leaf(Kind::Literal(value), token.column));
        match token.kind {
            TokenKind::Int(i) => leaf(Value::Int(i)),
            TokenKind::Float(f) => leaf(Value::Float(f)),
            TokenKind::Bool(b) => leaf(Value::Bool(b)),
            TokenKind::Nil => leaf(Value::Nil),
            TokenKind::Ident(name) => self.parse_name(name, token.column),
            TokenKind::Hash if self.predicates > 0 => Ok(Node::leaf(Kind::Element, token.column)),
            TokenKind::Hash => Err(FormulaError::at(
                token.column,
                "`#` is the element inside a predicate, e.g. `count([a, b], {# > 1})`",
            )),
            TokenKind::LParen => {
                let inner = self.parse_expression(0)?;
                self.expect(TokenKind::RParen, "a closing `)`")?;
                Ok(inner)
            }
            TokenKind::LBracket => self.parse_array(token.column),
            TokenKind::LBrace => Err(FormulaError::at(
                token.column,
                "maps (`{`) are not supported; braces only wrap a predicate, as in \
                 `count([a, b], {# > 1})`",
            )),
            other => Err(FormulaError::at(
                token.column,
                format!(
                    "expected a number, a trigger name, a function call or `(`, found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// A trigger name or a call.
    fn parse_name(&mut self, name: String, column: usize) -> Result<Node> {
        if self.peek().kind == TokenKind::LParen {
            return self.parse_call(&name, column);
        }
        if UNSUPPORTED_KEYWORDS.contains(&name.as_str()) {
            return Err(FormulaError::at(
                column,
                format!("`{name}` is not supported"),
            ));
        }
        if UNSUPPORTED_OPERATOR_WORDS.contains(&name.as_str()) {
            return Err(FormulaError::at(
                column,
                format!("the operator `{name}` is not supported"),
            ));
        }
        Ok(Node::leaf(Kind::Variable(name), column))
    }

    /// `[a, b, ...]` (a trailing comma allowed), with the `[` taken.
    fn parse_array(&mut self, column: usize) -> Result<Node> {
        let elements = self.parse_list(TokenKind::RBracket, "`,` or the closing `]`")?;
        Node::branch(Kind::Array(elements), column)
    }

    /// Comma-separated expressions up to `close` (a trailing comma allowed), `close` taken.
    fn parse_list(&mut self, close: TokenKind, expected: &str) -> Result<Vec<Node>> {
        let mut items = Vec::new();
        while self.peek().kind != close {
            if !items.is_empty() {
                self.expect(TokenKind::Comma, expected)?;
                if self.peek().kind == close {
                    break;
                }
            }
            items.push(self.parse_expression(0)?);
        }
        self.bump();
        Ok(items)
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
        let expected = format!("`,` or the closing `)` of `{name}(`");
        let args = if function == Function::Count {
            self.parse_count_arguments(&expected)?
        } else {
            self.parse_list(TokenKind::RParen, &expected)?
        };
        let arity_ok = match function {
            Function::Min | Function::Max => !args.is_empty(),
            Function::Count => true,
            _ => args.len() == 1,
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

    /// `count(array)` or `count(array, predicate)`, the predicate in braces or bare, as
    /// expr-lang's `parsePredicate` takes it; with the `(` taken.
    fn parse_count_arguments(&mut self, expected: &str) -> Result<Vec<Node>> {
        let mut args = vec![self.parse_expression(0)?];
        if self.peek().kind == TokenKind::Comma {
            self.bump();
            if self.peek().kind != TokenKind::RParen {
                args.push(self.parse_predicate()?);
                if self.peek().kind == TokenKind::Comma {
                    self.bump();
                }
            }
        }
        self.expect(TokenKind::RParen, expected)?;
        Ok(args)
    }

    fn parse_predicate(&mut self) -> Result<Node> {
        let braces = self.peek().kind == TokenKind::LBrace;
        if braces {
            self.bump();
        }
        self.predicates += 1;
        let predicate = self.parse_expression(0)?;
        self.predicates -= 1;
        if braces {
            self.expect(TokenKind::RBrace, "the closing `}` of the predicate")?;
        }
        Ok(predicate)
    }
}
