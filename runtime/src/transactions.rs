//! The options of a plugin's transaction (`context.database.transaction(callback, options)`).

use serde_json::Value;

use crate::{Error, Result};

/// How a plugin's transaction runs (`options` of `context.database.transaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionOptions {
    pub isolation: Isolation,
    pub read_only: bool,
}

/// PostgreSQL's isolation levels a plugin may ask for (`read uncommitted` is `read committed`
/// in PostgreSQL, so it is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl TransactionOptions {
    /// Reads `{isolation?, readOnly?}`; anything else is a `TypeError` naming what to fix.
    pub fn from_json(options: &Value) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidValue { reason };
        let mut parsed = TransactionOptions {
            isolation: Isolation::ReadCommitted,
            read_only: false,
        };
        let Some(fields) = options.as_object() else {
            return if options.is_null() {
                Ok(parsed)
            } else {
                Err(invalid(
                    "transaction options must be an object { isolation, readOnly }".into(),
                ))
            };
        };
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("isolation", Value::Null) | ("readOnly", Value::Null) => {}
                ("isolation", Value::String(level)) => {
                    parsed.isolation = match level.as_str() {
                        "read committed" => Isolation::ReadCommitted,
                        "repeatable read" => Isolation::RepeatableRead,
                        "serializable" => Isolation::Serializable,
                        other => {
                            return Err(invalid(format!(
                                "isolation '{other}' is not one of \"read committed\", \"repeatable read\", \"serializable\""
                            )))
                        }
                    }
                }
                ("readOnly", Value::Bool(read_only)) => parsed.read_only = *read_only,
                ("isolation", _) => {
                    return Err(invalid(
                        "isolation must be \"read committed\", \"repeatable read\" or \"serializable\""
                            .into(),
                    ))
                }
                ("readOnly", _) => return Err(invalid("readOnly must be a boolean".into())),
                (other, _) => {
                    return Err(invalid(format!(
                        "unknown transaction option '{other}'; the options are isolation and readOnly"
                    )))
                }
            }
        }
        Ok(parsed)
    }

    /// The `BEGIN` that opens such a transaction.
    pub fn begin_statement(self) -> &'static str {
        match (self.isolation, self.read_only) {
            (Isolation::ReadCommitted, false) => "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE",
            (Isolation::ReadCommitted, true) => "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY",
            (Isolation::RepeatableRead, false) => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE"
            }
            (Isolation::RepeatableRead, true) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            (Isolation::Serializable, false) => "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE",
            (Isolation::Serializable, true) => "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn options_default_to_read_committed_read_write() {
        for options in [
            json!(null),
            json!({}),
            json!({"isolation": null, "readOnly": null}),
        ] {
            let parsed = TransactionOptions::from_json(&options).unwrap();
            assert_eq!(
                parsed.begin_statement(),
                "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
            );
        }
        let parsed =
            TransactionOptions::from_json(&json!({"isolation": "serializable", "readOnly": true}))
                .unwrap();
        assert_eq!(
            parsed.begin_statement(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
        );
        let parsed =
            TransactionOptions::from_json(&json!({"isolation": "repeatable read"})).unwrap();
        assert_eq!(parsed.isolation, Isolation::RepeatableRead);
    }

    #[test]
    fn unknown_levels_and_options_are_type_errors() {
        for (options, expected) in [
            (json!({"isolation": "read uncommitted"}), "read uncommitted"),
            (json!({"isolation": "SERIALIZABLE"}), "SERIALIZABLE"),
            (json!({"isolation": 3}), "isolation must be"),
            (json!({"readOnly": "yes"}), "readOnly must be a boolean"),
            (
                json!({"deferrable": true}),
                "unknown transaction option 'deferrable'",
            ),
            (json!("serializable"), "must be an object"),
        ] {
            let error = TransactionOptions::from_json(&options).unwrap_err();
            assert_eq!(error.js_name(), "TypeError");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
