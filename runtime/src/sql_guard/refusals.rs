//! What the guard refuses before or beside the walk (query bodies and table references the
//! visitor does not report), and how refusals and syntax errors are reported.

use super::*;

/// Refuses what a query body may hold that the visitor does not report: `SELECT ... INTO`
/// (creates a table), `TABLE name` (a table the parser keeps as plain strings) and `MERGE`.
pub(super) fn check_set_expression(body: &SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => Err(not_allowed(
            "SELECT ... INTO is not allowed; use CREATE TABLE ... AS SELECT",
        )),
        SetExpr::SetOperation { left, right, .. } => {
            // Set operations chain to the left; walk that side in a loop, not by recursion.
            let mut pending = vec![&**left, &**right];
            while let Some(part) = pending.pop() {
                match part {
                    SetExpr::SetOperation { left, right, .. } => {
                        pending.push(left);
                        pending.push(right);
                    }
                    other => check_set_expression(other)?,
                }
            }
            Ok(())
        }
        SetExpr::Table(table) => Err(not_allowed(format!(
            "{table} is not allowed; use SELECT * FROM"
        ))),
        SetExpr::Merge(_) => Err(not_allowed(format!(
            "MERGE is not allowed; a plugin may run {ALLOWED_STATEMENTS}"
        ))),
        SetExpr::Select(_)
        | SetExpr::Query(_)
        | SetExpr::Values(_)
        | SetExpr::Insert(_)
        | SetExpr::Update(_)
        | SetExpr::Delete(_) => Ok(()),
    }
}

/// Refuses the parts of a table reference PostgreSQL does not have or that reach elsewhere.
pub(super) fn check_plain_table_factor(factor: &TableFactor) -> Result<()> {
    if let TableFactor::Derived {
        sample: Some(_), ..
    } = factor
    {
        return Err(not_allowed("TABLESAMPLE is not allowed"));
    }
    let TableFactor::Table {
        with_hints,
        version,
        partitions,
        json_path,
        sample,
        index_hints,
        ..
    } = factor
    else {
        return Ok(());
    };
    if sample.is_some() {
        return Err(not_allowed("TABLESAMPLE is not allowed"));
    }
    if !with_hints.is_empty()
        || version.is_some()
        || !partitions.is_empty()
        || json_path.is_some()
        || !index_hints.is_empty()
    {
        return Err(not_allowed(format!(
            "this table reference is not allowed: {factor}"
        )));
    }
    Ok(())
}

/// First keywords of statement kinds the guard refuses whatever follows them.
pub(super) const REFUSED_FIRST_KEYWORDS: [&str; 41] = [
    "ABORT",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "DEALLOCATE",
    "DECLARE",
    "DISCARD",
    "DO",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SET",
    "SHOW",
    "START",
    "UNLISTEN",
    "VACUUM",
];

/// SQL the parser cannot read: a statement of a refused kind (`DO`, `LOCK`, …) is refused as
/// such; otherwise it is a syntax error, reported as PostgreSQL would (SQLSTATE 42601).
pub(super) fn syntax_error(sql: &str, error: ParserError) -> Error {
    let message = match error {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
        ParserError::RecursionLimitExceeded => return not_allowed("statement nests too deeply"),
    };
    let first: String = sql
        .trim_start()
        .chars()
        .take_while(|character| character.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    if REFUSED_FIRST_KEYWORDS.contains(&first.as_str()) {
        return not_allowed(format!("{first} statements are not allowed ({message})"));
    }
    Error::Database {
        sqlstate: "42601".into(),
        message: format!("syntax error: {message}"),
    }
}

pub(super) fn not_allowed(reason: impl Into<String>) -> Error {
    Error::SqlNotAllowed {
        reason: reason.into(),
    }
}
