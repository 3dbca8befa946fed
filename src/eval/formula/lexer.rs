//! Characters → tokens, with the column of each; what KEDA's formula language has but this
//! evaluator refuses is refused here, by name and column.

use super::{FormulaError, Result};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Ident(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// `**` or `^` (the symbol as written, for messages).
    Pow(&'static str),
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
    /// `??`
    Coalesce,
    Colon,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    /// `#`, the element inside a predicate.
    Hash,
    End,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub(super) fn describe(&self) -> String {
        let op = match self {
            TokenKind::Int(i) => return format!("the number `{i}`"),
            TokenKind::Float(f) => return format!("the number `{f}`"),
            TokenKind::Bool(b) => return format!("`{b}`"),
            TokenKind::Nil => return "`nil`".to_owned(),
            TokenKind::Ident(name) => return format!("`{name}`"),
            TokenKind::End => return "the end of the formula".to_owned(),
            TokenKind::Pow(symbol) => symbol,
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
            TokenKind::Coalesce => "??",
            TokenKind::Colon => ":",
            TokenKind::LParen => "(",
            TokenKind::RParen => ")",
            TokenKind::LBracket => "[",
            TokenKind::RBracket => "]",
            TokenKind::LBrace => "{",
            TokenKind::RBrace => "}",
            TokenKind::Comma => ",",
            TokenKind::Hash => "#",
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
        if let Some(end) = comment_end(&chars, i)? {
            i = end;
            continue;
        }
        if let Some(reason) = unsupported(c, next) {
            return Err(FormulaError::at(i, reason));
        }
        let (kind, len) = match c {
            '0'..='9' => lex_number(&chars, i)?,
            // A leading dot: `.5` is 0.5, as in expr-lang.
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => lex_number(&chars, i)?,
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

/// Where the comment starting at `start` ends (`// ...` to the end of the line, `/* ... */`),
/// or None when no comment starts there.
fn comment_end(chars: &[char], start: usize) -> Result<Option<usize>> {
    let rest = &chars[start..];
    if rest.starts_with(&['/', '/']) {
        let end = (start..chars.len()).find(|&j| chars[j] == '\n');
        return Ok(Some(end.map_or(chars.len(), |j| j + 1)));
    }
    if rest.starts_with(&['/', '*']) {
        let close =
            (start + 2..chars.len()).find(|&j| chars[j] == '*' && chars.get(j + 1) == Some(&'/'));
        return match close {
            Some(j) => Ok(Some(j + 2)),
            None => Err(FormulaError::at(start, "unclosed comment `/*`")),
        };
    }
    Ok(None)
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
        "nil" => TokenKind::Nil,
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
        ('*', Some('*')) => two(TokenKind::Pow("**")),
        ('?', Some('?')) => two(TokenKind::Coalesce),
        ('^', _) => one(TokenKind::Pow("^")),
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
        ('[', _) => one(TokenKind::LBracket),
        (']', _) => one(TokenKind::RBracket),
        ('{', _) => one(TokenKind::LBrace),
        ('}', _) => one(TokenKind::RBrace),
        (',', _) => one(TokenKind::Comma),
        ('#', _) => one(TokenKind::Hash),
        _ => None,
    }
}

/// Why the language of KEDA's formulas has `c` (followed by `next`) but this evaluator
/// refuses it, or None when it is not refused here.
fn unsupported(c: char, next: Option<char>) -> Option<&'static str> {
    Some(match (c, next) {
        ('=', Some('=')) | ('&', Some('&')) | ('|', Some('|')) => return None,
        ('=', _) => "`=` is not supported (no assignment); compare with `==`",
        ('&', _) => "`&` is not supported; `&&` is (and)",
        ('|', _) => "the pipe operator `|` is not supported",
        ('?', Some('.')) => "optional chaining `?.` (member access) is not supported",
        ('.', Some('.')) => "ranges `..` are not supported",
        ('.', Some(n)) if n.is_ascii_digit() => return None,
        ('.', _) => "member access `.` is not supported",
        ('"' | '\'' | '`', _) => {
            "string literals are not supported: a formula computes a number from trigger values"
        }
        ('#', Some(n)) if n.is_ascii_alphabetic() || n == '_' => {
            "named pointers (`#index`, `#acc`) are not supported; `#` alone is the element"
        }
        (';', _) => "several expressions (`;`) are not supported",
        ('$', _) => "`$env` and `$` names are not supported",
        _ => return None,
    })
}

/// A number literal starting at `start` (a digit, or a `.` before one), as expr-lang reads
/// it: `_` anywhere after the first character, `0x`/`0o`/`0b` integers, and a float when
/// there is a `.` or an exponent. Returns the token and its length.
fn lex_number(chars: &[char], start: usize) -> Result<(TokenKind, usize)> {
    let at = |i: usize| chars.get(i).copied();
    let mut i = start;
    let radix = match (at(i), at(i + 1)) {
        (Some('0'), Some('x' | 'X')) => 16,
        (Some('0'), Some('o' | 'O')) => 8,
        (Some('0'), Some('b' | 'B')) => 2,
        _ => 10,
    };
    if radix != 10 {
        i += 2;
    }
    let digits = |i: &mut usize| {
        while at(*i).is_some_and(|c| c == '_' || c.is_digit(radix)) {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut is_float = false;
    // `1..3` is a range, not `1.` followed by `.3`.
    if at(i) == Some('.') && at(i + 1) != Some('.') {
        is_float = true;
        i += 1;
        digits(&mut i);
    }
    if radix == 10 && matches!(at(i), Some('e' | 'E')) {
        is_float = true;
        i += 1;
        if matches!(at(i), Some('+' | '-')) {
            i += 1;
        }
        digits(&mut i);
    }
    let written: String = chars[start..i].iter().collect();
    if at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
        let mut bad = written;
        bad.extend(at(i));
        return Err(FormulaError::at(
            start,
            format!("bad number syntax `{bad}`"),
        ));
    }
    let text: String = written.chars().filter(|&c| c != '_').collect();
    let kind = number_kind(&text, &written, radix, is_float)
        .map_err(|message| FormulaError::at(start, message))?;
    Ok((kind, i - start))
}

/// The value of a number literal without its `_`s (`text`; `written` as in the formula).
fn number_kind(text: &str, written: &str, radix: u32, is_float: bool) -> Result<TokenKind, String> {
    if radix != 10 {
        let name = match radix {
            16 => "hexadecimal",
            8 => "octal",
            _ => "binary",
        };
        if is_float {
            return Err(format!("invalid {name} literal `{written}`: integers only"));
        }
        return i64::from_str_radix(&text[2..], radix)
            .map(TokenKind::Int)
            .map_err(|_| {
                format!(
                    "invalid {name} literal `{written}`: digits missing or more than {}",
                    i64::MAX
                )
            });
    }
    if is_float {
        return match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(TokenKind::Float(f)),
            Ok(_) => Err(format!("the number `{written}` is too large")),
            Err(_) => Err(format!("invalid float literal `{written}`")),
        };
    }
    text.parse::<i64>().map(TokenKind::Int).map_err(|_| {
        format!(
            "the integer `{written}` is too large (at most {}); write it as a float \
             (`{text}.0`)",
            i64::MAX
        )
    })
}
