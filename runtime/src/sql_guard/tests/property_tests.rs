//! Property tests (proptest): string literals run with exactly the written value, quoted
//! identifiers keep their name, arbitrary fragments never panic the guard, and what passes is a
//! fixpoint.

use super::*;

/// The values PostgreSQL reads from the string literals of a statement, as its lexer does with
/// `standard_conforming_strings` on: `'...'` with each doubled quote read as one, and
/// `$tag$...$tag$` taken as it stands. Written here without the parser, so that the property
/// below does not check the parser against itself.
fn postgres_string_literals(sql: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut characters = sql.chars().peekable();
    let mut in_identifier = false;
    while let Some(character) = characters.next() {
        match character {
            '"' => in_identifier = !in_identifier,
            '$' if !in_identifier => {
                let rest: String = characters.clone().collect();
                let Some(tag_end) = rest.find('$') else {
                    continue;
                };
                let tag = &rest[..tag_end];
                if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
                    continue;
                }
                let delimiter = format!("${tag}$");
                let body = &rest[tag_end + 1..];
                let Some(close) = body.find(&delimiter) else {
                    continue;
                };
                literals.push(body[..close].to_string());
                let consumed = tag_end + 1 + close + delimiter.len();
                for _ in 0..rest[..consumed].chars().count() {
                    characters.next();
                }
            }
            '\'' if !in_identifier => {
                let mut value = String::new();
                loop {
                    match characters.next() {
                        Some('\'') if characters.peek() == Some(&'\'') => {
                            characters.next();
                            value.push('\'');
                        }
                        Some('\'') | None => break,
                        Some(other) => value.push(other),
                    }
                }
                literals.push(value);
            }
            _ => {}
        }
    }
    literals
}

fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// What PostgreSQL will read from the statement that runs is exactly what the guard checked:
    /// every string literal a passing statement runs with has the value the plugin wrote.
    #[test]
    fn string_literals_run_with_exactly_the_checked_value(
        first in "[a-z'\"\\\\;$ %_\\-\\n\\t\\u{e9}\\u{2028}]{0,24}",
        second in "[a-z'\"\\\\;$ ]{0,12}",
    ) {
        let sql = format!(
            "SELECT id FROM users WHERE name = {} OR email LIKE {}",
            sql_string(&first),
            sql_string(&second)
        );
        match guard(&sql) {
            Ok(guarded) => proptest::prop_assert_eq!(
                postgres_string_literals(&guarded.sql),
                vec![first, second]
            ),
            Err(other) => proptest::prop_assert!(false, "refused {sql:?}: {other:?}"),
        }
    }

    /// Quoted identifiers keep their exact name, and anything refused is refused with a typed error.
    #[test]
    fn quoted_column_names_run_with_exactly_the_checked_name(name in "[a-z\"\\\\' ]{1,16}") {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let sql = format!("SELECT {quoted} FROM users");
        match guard(&sql) {
            Ok(guarded) => proptest::prop_assert_eq!(
                guarded.sql,
                format!("SELECT {quoted} FROM \"shop_users\" AS users")
            ),
            Err(Error::SqlNotAllowed { .. } | Error::Database { .. }) => {}
            Err(other) => proptest::prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// Statements made of arbitrary SQL fragments never panic the guard, and whatever passes
    /// reads back as the tree that was checked (the guard's own round trip, seen from outside:
    /// its output parses, and printing that parse gives the output again).
    #[test]
    fn arbitrary_fragments_never_panic_and_passing_output_is_a_fixpoint(
        fragments in proptest::collection::vec(proptest::sample::select(vec![
            "SELECT", "*", "id", "name", "FROM", "users", "orders", "WHERE", "=", "'x'", "'a''b'",
            "E'\\\\'", "N'n'", "$1", "1", "(", ")", ",", ".", "::", "regclass", "text", "AS", "g",
            "unnest", "ARRAY['a']", "current_user", "pg_read_file", "--", "/*", "*/", ";",
            "\"q\"", "\"a\"\"b\"", "OR", "AND", "INSERT", "INTO", "VALUES", "JOIN", "ON", "|",
            "\\\\", "$$", "U&'x'", "X'1'", "LATERAL", "generate_series", "(1)",
        ]), 1..18)
    ) {
        let sql = fragments.join(" ");
        if let Ok(guarded) = guard(&sql) {
            let reparsed = Parser::parse_sql(&PostgreSqlDialect {}, &guarded.sql)
                .expect("the guard's output parses");
            proptest::prop_assert_eq!(reparsed.len(), 1);
            proptest::prop_assert_eq!(reparsed[0].to_string(), guarded.sql);
        }
    }
}
