//! The parse-cost limit, checked on the tokens before the parser runs.

use super::*;

/// The most parsing work the guard accepts, in tokens weighted by how often the parser may parse
/// them (see [`check_parse_cost`]). A typical statement weighs tens to hundreds; at the limit,
/// parsing takes some tens of milliseconds in a release build.
const MAX_PARSE_WORK: u64 = 1 << 16;

/// Refuses a statement whose parsing could take long, before parsing it.
///
/// The parser tries a keyword that starts special syntax (`CAST(`, `POSITION(`, `CASE`, ...) as
/// that syntax first and, when that fails, parses the same tokens again as something else; so
/// each such construct around a token multiplies how often the token may be parsed, by two
/// (three for `POSITION`, which has one more attempt). Nested 20 deep, a hundred bytes took
/// seconds. This sums, over all tokens, the product of the factors of the constructs around
/// them, and refuses the statement above [`MAX_PARSE_WORK`]. Constructs are delimited by their
/// brackets, and a `CASE` by its `END` (or, conservatively, the next comma at its level).
pub(super) fn check_parse_cost(tokens: &[TokenWithSpan]) -> Result<()> {
    /// One level of brackets: the weight of its tokens on entry, and the `CASE`s open in it.
    struct Level {
        weight: u64,
        open_cases: u32,
    }
    // The outermost level is never closed, so `levels` is never empty.
    let mut levels = vec![Level {
        weight: 1,
        open_cases: 0,
    }];
    let mut pending_factor = 1;
    let mut work: u64 = 0;
    let significant = tokens
        .iter()
        .map(|token| &token.token)
        .filter(|token| !matches!(token, Token::Whitespace(_)));
    let mut significant = significant.peekable();
    while let Some(token) = significant.next() {
        let innermost = levels.len() - 1;
        let level = &levels[innermost];
        let weight = level
            .weight
            .saturating_mul(1u64.checked_shl(level.open_cases).unwrap_or(u64::MAX));
        work = work.saturating_add(weight);
        if work > MAX_PARSE_WORK {
            return Err(not_allowed(
                "statement is too complex to check: too much nesting of CASE, CAST, POSITION \
                 or similar syntax",
            ));
        }
        let mut next_factor = 1;
        match token {
            Token::LParen | Token::LBracket => levels.push(Level {
                weight: weight.saturating_mul(pending_factor),
                open_cases: 0,
            }),
            // An unmatched closing bracket is left for the parser to report.
            Token::RParen | Token::RBracket if innermost > 0 => {
                levels.pop();
            }
            Token::Comma => levels[innermost].open_cases = 0,
            Token::Word(word) if word.keyword == Keyword::CASE => {
                levels[innermost].open_cases += 1;
            }
            Token::Word(word) if word.keyword == Keyword::END => {
                let level = &mut levels[innermost];
                level.open_cases = level.open_cases.saturating_sub(1);
            }
            Token::Word(word)
                if matches!(significant.peek(), Some(Token::LParen | Token::LBracket)) =>
            {
                next_factor = special_syntax_factor(word.keyword);
            }
            _ => {}
        }
        pending_factor = next_factor;
    }
    Ok(())
}

/// How many ways the parser may try a keyword followed by a bracket (see [`check_parse_cost`]).
fn special_syntax_factor(keyword: Keyword) -> u64 {
    match keyword {
        Keyword::POSITION => 3,
        Keyword::ARRAY
        | Keyword::BOX
        | Keyword::CAST
        | Keyword::CEIL
        | Keyword::CIRCLE
        | Keyword::CONVERT
        | Keyword::EXISTS
        | Keyword::EXTRACT
        | Keyword::FLOOR
        | Keyword::INTERVAL
        | Keyword::LINE
        | Keyword::LSEG
        | Keyword::MAP
        | Keyword::MATCH
        | Keyword::NOT
        | Keyword::OVERLAY
        | Keyword::PATH
        | Keyword::POINT
        | Keyword::POLYGON
        | Keyword::SAFE_CAST
        | Keyword::STRUCT
        | Keyword::SUBSTR
        | Keyword::SUBSTRING
        | Keyword::TRIM
        | Keyword::TRY_CAST
        | Keyword::TRY_CONVERT => 2,
        _ => 1,
    }
}
