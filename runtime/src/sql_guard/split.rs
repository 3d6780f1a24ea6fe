//! Splits a migration's SQL into its statements, at the `;` tokens PostgreSQL would split at.
//!
//! The text is tokenized by the guard's own tokenizer, so a `;` inside a string, a quoted
//! identifier, a dollar-quoted body or a comment is never a separator, exactly as the guard
//! reads each piece afterwards. Each piece is then checked by [`super::guard_statement`] on its
//! own: a piece this split got wrong would fail that check, never slip past it.

use super::*;

/// The statements of `sql`, each as the plugin wrote it, without the `;` between them. Pieces
/// holding only whitespace and comments (a trailing `;`, `;;`) are left out.
pub fn split_statements(sql: &str) -> Result<Vec<&str>> {
    let dialect = GuardDialect(PostgreSqlDialect {});
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|error| syntax_error(sql, error.into()))?;
    let mut offsets = ByteOffsets::new(sql);
    let mut statements = Vec::new();
    let mut start = 0;
    let mut has_content = false;
    for token in &tokens {
        match token.token {
            Token::SemiColon => {
                let end = offsets.of(token.span.start);
                if has_content {
                    statements.push(sql[start..end].trim());
                }
                start = end + 1;
                has_content = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => has_content = true,
        }
    }
    if has_content {
        statements.push(sql[start..].trim());
    }
    Ok(statements)
}

/// Turns the tokenizer's locations (line and column, both counted in characters from 1) into
/// byte offsets, for locations given in increasing order.
struct ByteOffsets<'a> {
    characters: std::str::CharIndices<'a>,
    line: u64,
    column: u64,
    offset: usize,
}

impl<'a> ByteOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        ByteOffsets {
            characters: sql.char_indices(),
            line: 1,
            column: 1,
            offset: 0,
        }
    }

    fn of(&mut self, location: sqlparser::tokenizer::Location) -> usize {
        while (self.line, self.column) < (location.line, location.column) {
            let Some((offset, character)) = self.characters.next() else {
                break;
            };
            self.offset = offset + character.len_utf8();
            if character == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_are_split_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (id INT, note TEXT DEFAULT 'x;y');\n\
                   -- a comment; still a comment\n\
                   INSERT INTO a (note) VALUES ($$semi;colon$$) /* ; */;\n\
                   SELECT \"odd;name\" FROM a;";
        assert_eq!(
            split_statements(sql).unwrap(),
            vec![
                "CREATE TABLE a (id INT, note TEXT DEFAULT 'x;y')",
                "-- a comment; still a comment\nINSERT INTO a (note) VALUES ($$semi;colon$$) /* ; */",
                "SELECT \"odd;name\" FROM a",
            ]
        );
    }

    #[test]
    fn empty_pieces_and_trailing_semicolons_are_left_out() {
        assert_eq!(
            split_statements(" ;; SELECT 1 ;  ; -- end\n").unwrap(),
            vec!["SELECT 1"]
        );
        assert!(split_statements("  -- nothing\n ; ").unwrap().is_empty());
    }

    #[test]
    fn offsets_count_characters_beyond_ascii_and_lines() {
        let sql = "SELECT 'é;ü' AS\n\"ß\"; SELECT '日本';SELECT 2";
        assert_eq!(
            split_statements(sql).unwrap(),
            vec!["SELECT 'é;ü' AS\n\"ß\"", "SELECT '日本'", "SELECT 2"]
        );
    }

    #[test]
    fn an_unterminated_literal_is_a_syntax_error() {
        let error = split_statements("SELECT 'open; SELECT 1").unwrap_err();
        assert_eq!(error.js_name(), "DatabaseError");
        assert!(error.to_string().contains("42601"), "{error}");
    }
}
