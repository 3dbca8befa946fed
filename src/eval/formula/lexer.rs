//! Characters → tokens, with the column of each; what KEDA's formula language has but this
//! evaluator refuses is refused here, by name and column.

use super::{FormulaError, Result};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Token {
    pub(super) kind: TokenKind,
    /// 0-based character index.
    pub(super) column: usize,
}

pub(super) fn lex(source: &str) -> Result<Vec<Token>> {
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
pub(super) fn lex_word(chars: &[char], start: usize) -> (TokenKind, usize) {
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
pub(super) fn operator(c: char, next: Option<char>) -> Option<(TokenKind, usize)> {
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
pub(super) fn unsupported(c: char, next: Option<char>) -> Option<&'static str> {
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
pub(super) fn lex_number(chars: &[char], start: usize) -> Result<(TokenKind, usize)> {
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
