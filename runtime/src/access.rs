//! Access levels: how much of one granted table, topic or bucket a plugin may use.
//!
//! An entry of `allowedTables`, `allowedTopics` or `allowedBuckets` (declared or in an override)
//! is a name with an optional level after a colon: `rates:read`. Without one the plugin has the
//! kind's widest level, as it had before levels existed.

use std::fmt;

use crate::error::{Error, Result};

/// One access level. Which levels a kind of resource has is given by [`TABLE_LEVELS`],
/// [`TOPIC_LEVELS`] and [`BUCKET_LEVELS`], widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessLevel {
    /// Tables: everything, including DDL, indexes and `TRUNCATE`.
    Owner,
    /// Tables: `SELECT`, `INSERT`, `UPDATE`, `DELETE`.
    Write,
    /// Tables: `SELECT` only. Buckets: `download`, `exists`, `list`, `getPresignedUrl`.
    Read,
    /// Topics and buckets: every operation.
    All,
    /// Topics: `sendMessage` only.
    Produce,
    /// Topics: `subscribe` only.
    Consume,
}

/// A table's levels, widest first.
pub const TABLE_LEVELS: &[AccessLevel] =
    &[AccessLevel::Owner, AccessLevel::Write, AccessLevel::Read];
/// A topic's levels, widest first.
pub const TOPIC_LEVELS: &[AccessLevel] =
    &[AccessLevel::All, AccessLevel::Produce, AccessLevel::Consume];
/// A bucket's levels, widest first.
pub const BUCKET_LEVELS: &[AccessLevel] = &[AccessLevel::All, AccessLevel::Read];

impl AccessLevel {
    /// The word written after the colon, and shown in `PluginInfo.resources.*[].access`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Owner => "owner",
            AccessLevel::Write => "write",
            AccessLevel::Read => "read",
            AccessLevel::All => "all",
            AccessLevel::Produce => "produce",
            AccessLevel::Consume => "consume",
        }
    }

    /// Whether holding `self` allows an operation that needs `needed`. Table levels nest
    /// (`owner` ⊃ `write` ⊃ `read`); a topic's `produce` and `consume` are each part of `all`
    /// and not of each other; a bucket's `read` is part of `all`.
    pub fn allows(self, needed: AccessLevel) -> bool {
        use AccessLevel::*;
        self == needed
            || matches!(
                (self, needed),
                (Owner, Write | Read) | (Write, Read) | (All, Produce | Consume | Read)
            )
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Splits an allowed-list entry into its name and level: `rates:read` is `rates` at `read`,
/// `rates` is `rates` at the widest of `levels`. `kind` ("table", "topic", "bucket") and
/// `levels` say which words are valid; an unknown one is [`Error::InvalidName`], as a naming rule
/// failure is. The name itself is not checked here.
pub fn split_entry<'e>(
    kind: &str,
    levels: &[AccessLevel],
    entry: &'e str,
) -> Result<(&'e str, AccessLevel)> {
    let widest = levels.first().copied().unwrap_or(AccessLevel::All);
    let Some((name, word)) = entry.split_once(':') else {
        return Ok((entry, widest));
    };
    match levels.iter().find(|level| level.as_str() == word) {
        Some(level) => Ok((name, *level)),
        None => {
            let known: Vec<&str> = levels.iter().map(|level| level.as_str()).collect();
            Err(Error::invalid_name(format!(
                "unknown access level '{word}' for {kind} '{name}'; a {kind} level is one of: {}",
                known.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_a_level_has_the_widest_level_of_its_kind() {
        assert_eq!(
            split_entry("table", TABLE_LEVELS, "orders"),
            Ok(("orders", AccessLevel::Owner))
        );
        assert_eq!(
            split_entry("topic", TOPIC_LEVELS, "events"),
            Ok(("events", AccessLevel::All))
        );
        assert_eq!(
            split_entry("bucket", BUCKET_LEVELS, "data"),
            Ok(("data", AccessLevel::All))
        );
    }

    #[test]
    fn an_entry_with_a_level_of_its_kind_splits_at_the_colon() {
        assert_eq!(
            split_entry("table", TABLE_LEVELS, "rates:read"),
            Ok(("rates", AccessLevel::Read))
        );
        assert_eq!(
            split_entry("topic", TOPIC_LEVELS, "events:produce"),
            Ok(("events", AccessLevel::Produce))
        );
        assert_eq!(
            split_entry("bucket", BUCKET_LEVELS, "data:read"),
            Ok(("data", AccessLevel::Read))
        );
    }

    #[test]
    fn a_level_of_another_kind_or_an_unknown_word_is_an_invalid_name() {
        for (kind, levels, entry) in [
            ("table", TABLE_LEVELS, "rates:all"),
            ("table", TABLE_LEVELS, "rates:"),
            ("table", TABLE_LEVELS, "rates:READ"),
            ("topic", TOPIC_LEVELS, "events:read"),
            ("bucket", BUCKET_LEVELS, "data:write"),
            ("bucket", BUCKET_LEVELS, "data:read:read"),
        ] {
            match split_entry(kind, levels, entry) {
                Err(Error::InvalidName { reason }) => {
                    assert!(reason.contains("unknown access level"), "{entry}: {reason}");
                    assert!(reason.contains(kind), "{entry}: {reason}");
                }
                other => panic!("{entry}: expected an invalid name, got {other:?}"),
            }
        }
    }

    #[test]
    fn table_levels_nest_and_topic_levels_are_parts_of_all() {
        use AccessLevel::*;
        assert!(Owner.allows(Owner) && Owner.allows(Write) && Owner.allows(Read));
        assert!(Write.allows(Read) && !Write.allows(Owner));
        assert!(!Read.allows(Write) && !Read.allows(Owner));
        assert!(All.allows(Produce) && All.allows(Consume) && All.allows(Read));
        assert!(!Produce.allows(Consume) && !Consume.allows(Produce));
        assert!(!Read.allows(All));
    }
}
