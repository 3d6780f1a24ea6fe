//! The ksqlDB guard's tokens: splitting a statement into them, and printing them back.

use super::{listed, refused, ALLOWED_FUNCTIONS};
use crate::error::Result;

/// Punctuation and operators, longest first so that `<=` is one token.
const SYMBOLS: &[&str] = &[
    "<>", "<=", ">=", "!=", "->", "=>", ":=", "(", ")", "[", "]", ",", ";", ".", "*", "+", "-",
    "/", "%", "=", "<", ">",
];

/// One lexical token; quoted forms hold their content with the escapes undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// An unquoted identifier or keyword, as written.
    Word(String),
    /// A backquoted or double-quoted identifier.
    Quoted(String),
    /// A single-quoted string literal.
    Text(String),
    /// A number literal, as written.
    Number(String),
    /// Punctuation or an operator.
    Symbol(&'static str),
}

impl Token {
    /// Whether the token is the unquoted keyword `keyword` (ksqlDB keywords ignore case).
    pub(super) fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    /// The keyword in upper case, for unquoted words.
    pub(super) fn keyword(&self) -> Option<String> {
        match self {
            Token::Word(word) => Some(word.to_ascii_uppercase()),
            _ => None,
        }
    }

    /// How the token reads in a refusal message.
    pub(super) fn describe(&self) -> String {
        match self {
            Token::Word(word) => word.clone(),
            Token::Quoted(name) => format!("`{name}`"),
            Token::Text(text) => format!("'{text}'"),
            Token::Number(number) => number.clone(),
            Token::Symbol(symbol) => (*symbol).to_string(),
        }
    }

    fn write(&self, output: &mut String) {
        match self {
            Token::Word(word) | Token::Number(word) => output.push_str(word),
            Token::Quoted(name) => {
                output.push('`');
                output.push_str(&name.replace('`', "``"));
                output.push('`');
            }
            Token::Text(text) => {
                output.push('\'');
                output.push_str(&text.replace('\'', "''"));
                output.push('\'');
            }
            Token::Symbol(symbol) => output.push_str(symbol),
        }
    }
}

/// Splits a statement into tokens, dropping whitespace and comments and refusing every
/// character ksqlDB could read in a way the guard does not.
pub(super) fn tokenize(statement: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut rest = statement;
    while let Some(first) = rest.chars().next() {
        match first {
            ' ' | '\t' | '\n' | '\r' => rest = &rest[1..],
            '-' if rest.starts_with("--") => {
                rest = rest.find(['\n', '\r']).map_or("", |end| &rest[end..]);
            }
            '/' if rest.starts_with("/*") => {
                let Some(length) = rest[2..].find("*/") else {
                    return Err(refused("the statement has an unterminated /* comment"));
                };
                rest = &rest[2 + length + 2..];
            }
            '\'' => {
                let (text, after) = quoted(rest, '\'')?;
                // ksqlDB substitutes `${name}` inside string literals too.
                if text.contains("${") {
                    return Err(refused("variable substitution (${…}) is not allowed"));
                }
                tokens.push(Token::Text(text));
                rest = after;
            }
            '`' | '"' => {
                let (name, after) = quoted(rest, first)?;
                if name.is_empty() || name.chars().any(char::is_control) {
                    return Err(refused(
                        "a quoted identifier must be non-empty and printable",
                    ));
                }
                tokens.push(Token::Quoted(name));
                rest = after;
            }
            letter if letter.is_ascii_alphabetic() || letter == '_' => {
                let end = rest
                    .find(|character: char| {
                        !(character.is_ascii_alphanumeric() || character == '_')
                    })
                    .unwrap_or(rest.len());
                tokens.push(Token::Word(rest[..end].to_string()));
                rest = &rest[end..];
            }
            // `.5` is a number, except right after a name or a bracket (`s.x`, `a[0].b`).
            '.' if rest[1..].starts_with(|next: char| next.is_ascii_digit())
                && !matches!(
                    tokens.last(),
                    Some(Token::Word(_) | Token::Quoted(_) | Token::Symbol(")" | "]"))
                ) =>
            {
                let end = number_length(rest)?;
                tokens.push(Token::Number(rest[..end].to_string()));
                rest = &rest[end..];
            }
            digit if digit.is_ascii_digit() => {
                let end = number_length(rest)?;
                tokens.push(Token::Number(rest[..end].to_string()));
                rest = &rest[end..];
            }
            _ => {
                let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) else {
                    return Err(refused(format!(
                        "the character {first:?} is not allowed outside string literals and quoted identifiers"
                    )));
                };
                tokens.push(Token::Symbol(symbol));
                rest = &rest[symbol.len()..];
            }
        }
    }
    Ok(tokens)
}

/// The content of the quoted token at the start of `text` (a doubled quote stands for one)
/// and the text after it.
fn quoted(text: &str, quote: char) -> Result<(String, &str)> {
    let mut content = String::new();
    let mut characters = text.char_indices().skip(1).peekable();
    while let Some((index, character)) = characters.next() {
        if character == quote {
            if characters.peek().is_some_and(|(_, next)| *next == quote) {
                characters.next();
                content.push(quote);
                continue;
            }
            return Ok((content, &text[index + 1..]));
        }
        if is_invisible(character) {
            return Err(refused(format!(
                "the invisible character {character:?} is not allowed, even quoted"
            )));
        }
        content.push(character);
    }
    Err(refused(format!(
        "the statement has an unterminated {quote} quote"
    )))
}

/// Control characters other than tab and line breaks, and the zero-width and direction
/// formatting characters that make a statement read differently from what it is.
fn is_invisible(character: char) -> bool {
    (character.is_control() && !matches!(character, '\t' | '\n' | '\r'))
        || matches!(character, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// The length of the number at the start of `text`: digits, an optional fraction and an
/// optional exponent. A letter right after it is refused, since ksqlDB reads `1abc` as a name.
fn number_length(text: &str) -> Result<usize> {
    let bytes = text.as_bytes();
    let digits_from = |start: usize| {
        start
            + bytes[start..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count()
    };
    let mut end = digits_from(0);
    if bytes.get(end) == Some(&b'.') {
        end = digits_from(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let exponent_end = digits_from(end + 1 + sign);
        if exponent_end > end + 1 + sign {
            end = exponent_end;
        }
    }
    if bytes
        .get(end)
        .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'.')
    {
        return Err(refused(format!(
            "'{}' is neither a number nor a name",
            &text[..(end + 1).min(text.len())]
        )));
    }
    Ok(end)
}

/// Prints tokens with one space between them, except where no space reads better and cannot
/// join two tokens into another: nothing but a closing bracket, `,` or `;` ever touches a `-`,
/// `/` or `*` that precedes it, so no `--` or `/*` can appear.
pub(super) fn render(tokens: &[Token]) -> String {
    let mut output = String::new();
    let mut previous: Option<&Token> = None;
    for token in tokens {
        if let Some(previous) = previous {
            let tight = matches!(previous, Token::Symbol("(" | "["))
                || matches!(token, Token::Symbol(")" | "]" | "," | ";"))
                || (matches!(previous, Token::Word(_) | Token::Quoted(_))
                    && matches!(token, Token::Symbol(".")))
                || (previous.keyword().is_some_and(|keyword| {
                    listed(ALLOWED_FUNCTIONS, keyword.as_str())
                        || matches!(
                            keyword.as_str(),
                            "CAST" | "DECIMAL" | "HEADER" | "STRUCT" | "MAP"
                        )
                }) && matches!(token, Token::Symbol("(")))
                || (matches!(previous, Token::Symbol("."))
                    && matches!(
                        token,
                        Token::Word(_) | Token::Quoted(_) | Token::Symbol("*")
                    ));
            if !tight {
                output.push(' ');
            }
        }
        token.write(&mut output);
        previous = Some(token);
    }
    output
}
