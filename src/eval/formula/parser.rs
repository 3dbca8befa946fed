//! Tokens → syntax tree, with expr-lang's precedence.

use super::{
    FUNCTIONS, FormulaError, MAX_DEPTH, Result, UNSUPPORTED_KEYWORDS, UNSUPPORTED_OPERATOR_WORDS,
    ast::*,
    lexer::{Token, TokenKind},
};

/// A precedence-climbing parser with expr-lang's precedence, lowest first: `? :`, `||`, `&&`,
/// comparisons (`== != < <= > >=`, one level, left-associative), `+ -`, `* / %`, unary.
pub(super) struct Parser<'t> {
    pub(super) tokens: &'t [Token],
    pub(super) pos: usize,
    /// Current recursion depth of `parse_expr`/`parse_unary`, bounded by [`MAX_DEPTH`].
    pub(super) depth: usize,
}

pub(super) fn binary_op(kind: &TokenKind) -> Option<(BinaryOp, u8)> {
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
pub(super) fn unexpected_after_operand(token: &Token, expected: &str) -> FormulaError {
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
    pub(super) fn peek(&self) -> &Token {
        // `lex` always ends the list with `End`, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    pub(super) fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != TokenKind::End {
            self.pos += 1;
        }
        token
    }

    pub(super) fn enter(&mut self, column: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(too_deep(column));
        }
        Ok(())
    }

    /// expression = binary [ "?" expression ":" expression ]
    pub(super) fn parse_expr(&mut self) -> Result<Node> {
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
    pub(super) fn parse_binary(&mut self, min_precedence: u8) -> Result<Node> {
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

    pub(super) fn parse_unary(&mut self) -> Result<Node> {
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

    pub(super) fn parse_primary(&mut self) -> Result<Node> {
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
    pub(super) fn parse_call(&mut self, name: &str, column: usize) -> Result<Node> {
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
