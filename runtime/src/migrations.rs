//! A plugin's migrations: the `migrations` list of its module object, checked at load.
//!
//! Only their shape is checked here (ids, uniqueness, a `sql` string); what each statement may
//! do is the SQL guard's business when the database gateway applies the pending ones, and the
//! records of what ran live in PostgreSQL (`warden.plugin_migrations`).

use std::collections::HashSet;

use serde_json::Value;

use crate::{sha256_hex, Error, Result};

/// The longest migration id, in characters.
pub const MAX_MIGRATION_ID_CHARS: usize = 128;

/// One entry of a plugin's `migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// 1–128 characters of `A-Z a-z 0-9 _ . -`, unique in the list.
    pub id: String,
    /// One or more statements separated by `;`.
    pub sql: String,
    /// Lowercase hex SHA-256 of `sql`, as recorded once it is applied.
    pub checksum: String,
}

/// Checks a migration id: 1–128 characters of `A-Z a-z 0-9 _ . -`.
pub fn validate_migration_id(id: &str) -> Result<()> {
    let length = id.chars().count();
    if length == 0 || length > MAX_MIGRATION_ID_CHARS {
        return Err(Error::invalid_format(format!(
            "migration id '{id}' must be 1 to {MAX_MIGRATION_ID_CHARS} characters long"
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || "_.-".contains(*character)))
    {
        return Err(Error::invalid_format(format!(
            "migration id '{id}' holds '{bad}'; use only A-Z, a-z, 0-9, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// The migrations as the prelude described them: `null` for none, an array of
/// `{id, sql, idType, sqlType}` (the `*Type` fields name what the plugin gave when it is not a
/// string), or `{error}` when `migrations` is not an array.
pub fn migrations_from_description(described: &Value) -> Result<Vec<Migration>> {
    let entries = match described {
        Value::Null => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => {
            let reason = other["error"].as_str().unwrap_or(
                "the plugin object's 'migrations' must be an array of { id, sql } objects",
            );
            return Err(Error::invalid_format(reason.to_owned()));
        }
    };
    let mut seen = HashSet::new();
    let mut migrations = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let position = format!("migrations[{index}]");
        if let Some(kind) = entry["entryType"].as_str() {
            return Err(Error::invalid_format(format!(
                "{position} is {kind}; each migration is an object {{ id, sql }}"
            )));
        }
        let Some(id) = entry["id"].as_str() else {
            let kind = entry["idType"].as_str().unwrap_or("missing");
            return Err(Error::invalid_format(format!(
                "{position} has no string 'id' (it is {kind}); give each migration an id such as \"001_create_orders\""
            )));
        };
        validate_migration_id(id)
            .map_err(|error| Error::invalid_format(format!("{position}: {}", reason_of(error))))?;
        let Some(sql) = entry["sql"].as_str() else {
            let kind = entry["sqlType"].as_str().unwrap_or("missing");
            return Err(Error::invalid_format(format!(
                "migration '{id}' has no string 'sql' (it is {kind})"
            )));
        };
        if sql.trim().is_empty() {
            return Err(Error::invalid_format(format!(
                "migration '{id}' has an empty 'sql'; give it at least one statement"
            )));
        }
        if !seen.insert(id.to_owned()) {
            return Err(Error::invalid_format(format!(
                "migration id '{id}' appears twice in 'migrations'; ids must be unique"
            )));
        }
        migrations.push(Migration {
            id: id.to_owned(),
            sql: sql.to_owned(),
            checksum: sha256_hex(sql.as_bytes()),
        });
    }
    Ok(migrations)
}

fn reason_of(error: Error) -> String {
    match error {
        Error::InvalidPluginFormat { reason } => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refusal(described: Value) -> String {
        match migrations_from_description(&described) {
            Err(Error::InvalidPluginFormat { reason }) => reason,
            other => panic!("expected invalid_plugin, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_list_keeps_its_order_and_checksums_its_sql() {
        let migrations = migrations_from_description(&json!([
            {"id": "002_b", "sql": "CREATE TABLE b (id INT)"},
            {"id": "001.a-x", "sql": "CREATE TABLE a (id INT)"},
        ]))
        .unwrap();
        assert_eq!(
            migrations.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["002_b", "001.a-x"]
        );
        assert_eq!(
            migrations[0].checksum,
            sha256_hex("CREATE TABLE b (id INT)".as_bytes())
        );
        assert_eq!(migrations[0].checksum.len(), 64);
        assert!(migrations_from_description(&Value::Null)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ids_follow_the_naming_rule() {
        assert!(validate_migration_id(&"a".repeat(128)).is_ok());
        assert!(refusal(json!([{"id": "a".repeat(129), "sql": "SELECT 1"}])).contains("1 to 128"));
        assert!(refusal(json!([{"id": "", "sql": "SELECT 1"}])).contains("1 to 128"));
        assert!(refusal(json!([{"id": "001 orders", "sql": "SELECT 1"}])).contains("' '"));
        assert!(refusal(json!([{"id": "001/orders", "sql": "SELECT 1"}])).contains("'/'"));
        assert!(refusal(json!([{"id": "é", "sql": "SELECT 1"}])).contains("'é'"));
    }

    #[test]
    fn duplicates_and_bad_shapes_are_refused_with_what_to_fix() {
        let duplicate = refusal(json!([
            {"id": "001", "sql": "SELECT 1"},
            {"id": "001", "sql": "SELECT 2"},
        ]));
        assert!(duplicate.contains("appears twice"), "{duplicate}");
        assert!(refusal(json!([{"idType": "number", "sql": "SELECT 1"}])).contains("number"));
        assert!(refusal(json!([{"id": "001", "sqlType": "object"}])).contains("object"));
        assert!(refusal(json!([{"id": "001", "sql": "  \n"}])).contains("empty"));
        assert!(refusal(json!([{"entryType": "a string"}])).contains("migrations[0] is a string"));
        assert!(
            refusal(json!({"error": "the plugin object's 'migrations' must be an array"}))
                .contains("must be an array")
        );
    }
}
