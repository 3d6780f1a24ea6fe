//! Plugin manifests (the module's `metadata` object) and the naming rules every name must follow.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::access::{split_entry, AccessLevel, BUCKET_LEVELS, TABLE_LEVELS, TOPIC_LEVELS};
use crate::error::{Error, Result};

/// Plugin names that no plugin may take: `shared` is the prefix of operator-shared resources,
/// `warden` is the source name of the runtime's own events and `admin` that of events published
/// through the admin API, so no plugin can emit an event that looks like the host's or an
/// operator's.
pub const RESERVED_PLUGIN_NAMES: [&str; 3] = ["admin", "shared", "warden"];

/// Which characters may start a name, and how messages describe them.
struct FirstCharacterRule {
    allowed: fn(u8) -> bool,
    description: &'static str,
}

/// One naming rule from the table in `PLUGIN_API.md`, written as data so that every kind of name is
/// checked by the same code and fails with the same kind of message.
struct NamingRule {
    /// What the name is, as it appears in messages ("plugin", "table", ...).
    kind: &'static str,
    minimum_length: usize,
    maximum_length: usize,
    allowed_character: fn(u8) -> bool,
    allowed_description: &'static str,
    /// `None` when any allowed character may start the name.
    first_character: Option<FirstCharacterRule>,
    forbidden_last_characters: &'static [u8],
    forbidden_sequences: &'static [&'static str],
}

impl NamingRule {
    fn check(&self, name: &str) -> Result<()> {
        let kind = self.kind;
        // Counting characters rather than bytes keeps the length message truthful for names that
        // will fail the character rule anyway.
        let length = name.chars().count();
        if length < self.minimum_length || length > self.maximum_length {
            return Err(Error::invalid_name(format!(
                "{kind} '{name}' must be {} to {} characters long, not {length}",
                self.minimum_length, self.maximum_length
            )));
        }
        if !name.bytes().all(self.allowed_character) {
            return Err(Error::invalid_name(format!(
                "{kind} '{name}' must use only {}",
                self.allowed_description
            )));
        }
        // From here on the name is ASCII, so byte positions are character positions.
        let bytes = name.as_bytes();
        if let (Some(first_rule), Some(&first)) = (&self.first_character, bytes.first()) {
            if !(first_rule.allowed)(first) {
                return Err(Error::invalid_name(format!(
                    "{kind} '{name}' must start with {}",
                    first_rule.description
                )));
            }
        }
        if let Some(last) = bytes.last() {
            if self.forbidden_last_characters.contains(last) {
                return Err(Error::invalid_name(format!(
                    "{kind} '{name}' must not end with {}",
                    describe_characters(self.forbidden_last_characters)
                )));
            }
        }
        if let Some(sequence) = self
            .forbidden_sequences
            .iter()
            .find(|sequence| name.contains(*sequence))
        {
            return Err(Error::invalid_name(format!(
                "{kind} '{name}' must not contain '{sequence}'"
            )));
        }
        Ok(())
    }
}

/// Renders characters as `'-' or '_'` for messages.
fn describe_characters(characters: &[u8]) -> String {
    let quoted: Vec<String> = characters
        .iter()
        .map(|character| format!("'{}'", char::from(*character)))
        .collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

fn is_lowercase_letter_or_digit(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

const PLUGIN_NAME_RULE: NamingRule = NamingRule {
    kind: "plugin",
    minimum_length: 1,
    maximum_length: 63,
    allowed_character: |byte| is_lowercase_letter_or_digit(byte) || byte == b'-' || byte == b'_',
    allowed_description: "a-z, 0-9, - and _",
    first_character: Some(FirstCharacterRule {
        allowed: is_lowercase_letter_or_digit,
        description: "a letter or a digit",
    }),
    forbidden_last_characters: b"-_",
    forbidden_sequences: &["--", "__", "-_", "_-"],
};

const TABLE_NAME_RULE: NamingRule = NamingRule {
    kind: "table",
    minimum_length: 1,
    maximum_length: 63,
    allowed_character: |byte| is_lowercase_letter_or_digit(byte) || byte == b'_',
    allowed_description: "a-z, 0-9 and _",
    first_character: Some(FirstCharacterRule {
        allowed: |byte| byte.is_ascii_lowercase() || byte == b'_',
        description: "a letter or _",
    }),
    forbidden_last_characters: b"_",
    forbidden_sequences: &["__"],
};

const TOPIC_NAME_RULE: NamingRule = NamingRule {
    kind: "topic",
    minimum_length: 1,
    maximum_length: 249,
    allowed_character: |byte| {
        is_lowercase_letter_or_digit(byte) || byte == b'.' || byte == b'_' || byte == b'-'
    },
    allowed_description: "a-z, 0-9, ., _ and -",
    first_character: None,
    forbidden_last_characters: b".",
    forbidden_sequences: &[".."],
};

/// Consumer groups follow the topic rule; only the word in messages differs.
const CONSUMER_GROUP_NAME_RULE: NamingRule = NamingRule {
    kind: "consumer group",
    ..TOPIC_NAME_RULE
};

const BUCKET_NAME_RULE: NamingRule = NamingRule {
    kind: "bucket",
    minimum_length: 3,
    maximum_length: 63,
    allowed_character: |byte| is_lowercase_letter_or_digit(byte) || byte == b'.' || byte == b'-',
    allowed_description: "a-z, 0-9, . and -",
    first_character: Some(FirstCharacterRule {
        allowed: is_lowercase_letter_or_digit,
        description: "a letter or a digit",
    }),
    forbidden_last_characters: b"-.",
    forbidden_sequences: &[".."],
};

/// Checks a plugin name: 1–63 characters of `a-z 0-9 - _`, starting with a letter or digit, not
/// ending with `-` or `_`, without `--`, `__`, `-_` or `_-`, and not one of [`RESERVED_PLUGIN_NAMES`].
pub fn validate_plugin_name(name: &str) -> Result<()> {
    PLUGIN_NAME_RULE.check(name)?;
    if RESERVED_PLUGIN_NAMES.contains(&name) {
        return Err(Error::invalid_name(format!(
            "plugin '{name}' uses a reserved name ({})",
            RESERVED_PLUGIN_NAMES.join(", ")
        )));
    }
    Ok(())
}

/// Checks a table name: 1–63 characters of `a-z 0-9 _`, starting with a letter or `_`, not ending
/// with `_`, without `__`.
pub fn validate_table_name(name: &str) -> Result<()> {
    TABLE_NAME_RULE.check(name)
}

/// Checks a topic name: 1–249 characters of `a-z 0-9 . _ -`, not ending with `.`, without `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    TOPIC_NAME_RULE.check(name)
}

/// Checks a Kafka consumer group name a plugin writes: the topic rule.
pub fn validate_consumer_group_name(name: &str) -> Result<()> {
    CONSUMER_GROUP_NAME_RULE.check(name)
}

/// Checks a bucket name: 3–63 characters of `a-z 0-9 . -`, starting with a letter or digit, not
/// ending with `-` or `.`, without `..`, and not shaped like an IPv4 address.
pub fn validate_bucket_name(name: &str) -> Result<()> {
    BUCKET_NAME_RULE.check(name)?;
    if looks_like_ipv4_address(name) {
        return Err(Error::invalid_name(format!(
            "bucket '{name}' must not be an IPv4 address"
        )));
    }
    Ok(())
}

/// Four dot-separated decimal numbers. Values above 255 are refused too, because S3 forbids
/// names *formatted* as an address, not only valid addresses.
fn looks_like_ipv4_address(name: &str) -> bool {
    let mut part_count = 0;
    for part in name.split('.') {
        part_count += 1;
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return false;
        }
    }
    part_count == 4
}

/// One entry of a manifest's `dependencies`: a plugin name, optionally pinned to an exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencySpec {
    pub name: String,
    pub version: Option<semver::Version>,
}

impl DependencySpec {
    /// Parses `"name"` or `"name@1.4.0"`. Version ranges (`^1.0`, `>=1`, `1.x`, ...) are refused
    /// because the contract only allows exact versions.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, version_text) = match text.split_once('@') {
            Some((name, version_text)) => (name, Some(version_text)),
            None => (text, None),
        };
        validate_plugin_name(name)?;
        let version = match version_text {
            None => None,
            Some(version_text) => Some(parse_exact_version(text, version_text)?),
        };
        Ok(DependencySpec {
            name: name.to_string(),
            version,
        })
    }
}

/// Parses the version half of a dependency, telling a range apart from plain garbage so the
/// author learns which rule they broke.
fn parse_exact_version(dependency: &str, version_text: &str) -> Result<semver::Version> {
    match semver::Version::parse(version_text) {
        Ok(version) => Ok(version),
        Err(_) if looks_like_version_range(version_text) => Err(Error::invalid_format(format!(
            "dependency '{dependency}' must name an exact version such as 1.4.0, not a range"
        ))),
        Err(parse_error) => Err(Error::invalid_format(format!(
            "dependency '{dependency}' has an invalid version: {parse_error}"
        ))),
    }
}

fn looks_like_version_range(version_text: &str) -> bool {
    version_text.starts_with(['^', '~', '>', '<', '=', '*'])
        || version_text.contains(['*', ' ', ',', '|'])
        || version_text
            .split('.')
            .any(|part| part.eq_ignore_ascii_case("x"))
        || semver::VersionReq::parse(version_text).is_ok()
}

impl fmt::Display for DependencySpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(version) => write!(formatter, "{}@{version}", self.name),
            None => formatter.write_str(&self.name),
        }
    }
}

/// What a plugin declares about itself in its module's `metadata` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    pub name: String,
    pub version: semver::Version,
    pub description: Option<String>,
    pub dependencies: Vec<DependencySpec>,
    pub allowed_tables: Vec<String>,
    pub allowed_topics: Vec<String>,
    pub allowed_buckets: Vec<String>,
}

impl PluginManifest {
    /// Parses the JSON form of a module's `metadata` object (keys: `name`, `version`,
    /// `description`, `dependencies`, `allowedTables`, `allowedTopics`, `allowedBuckets`; unknown
    /// keys are ignored, and an optional key set to `null` counts as absent, as JavaScript authors
    /// often write it). Shape errors are [`Error::InvalidPluginFormat`]; then [`Self::validate`] runs.
    pub fn from_json(metadata: &Value) -> Result<Self> {
        let Some(fields) = metadata.as_object() else {
            return Err(Error::invalid_format("metadata must be an object"));
        };
        let name = required_string(fields, "name")?;
        let version_text = required_string(fields, "version")?;
        let version = semver::Version::parse(&version_text).map_err(|parse_error| {
            Error::invalid_format(format!(
                "metadata 'version' '{version_text}' is not a semver version: {parse_error}"
            ))
        })?;
        let description = match present_field(fields, "description") {
            None => None,
            Some(Value::String(description)) => Some(description.clone()),
            Some(_) => {
                return Err(Error::invalid_format(
                    "metadata 'description' must be a string",
                ))
            }
        };
        let dependencies = optional_string_list(fields, "dependencies")?
            .iter()
            .map(|text| DependencySpec::parse(text))
            .collect::<Result<Vec<_>>>()?;
        let manifest = PluginManifest {
            name,
            version,
            description,
            dependencies,
            allowed_tables: optional_string_list(fields, "allowedTables")?,
            allowed_topics: optional_string_list(fields, "allowedTopics")?,
            allowed_buckets: optional_string_list(fields, "allowedBuckets")?,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the naming rules: the plugin name (reserved names included), every table, topic and
    /// bucket, and every dependency name. A name listed twice in one list is refused, and so are
    /// two dependency entries on the same plugin (even with different versions), because the
    /// runtime could not tell which one the author meant.
    pub fn validate(&self) -> Result<()> {
        validate_plugin_name(&self.name)?;
        let mut dependency_names = BTreeSet::new();
        for dependency in &self.dependencies {
            validate_plugin_name(&dependency.name)?;
            if !dependency_names.insert(dependency.name.as_str()) {
                return Err(Error::invalid_name(format!(
                    "duplicate dependency on plugin '{}' in dependencies",
                    dependency.name
                )));
            }
        }
        validate_name_list(
            "table",
            "allowedTables",
            &self.allowed_tables,
            TABLE_LEVELS,
            validate_table_name,
        )?;
        validate_name_list(
            "topic",
            "allowedTopics",
            &self.allowed_topics,
            TOPIC_LEVELS,
            validate_topic_name,
        )?;
        validate_name_list(
            "bucket",
            "allowedBuckets",
            &self.allowed_buckets,
            BUCKET_LEVELS,
            validate_bucket_name,
        )?;
        Ok(())
    }
}

/// Checks each entry of one list (a name with an optional `:level`, see [`crate::access`]) with
/// its kind's rule and levels, and refuses a name listed twice, with the same level or another.
/// Shared with the resource overrides, whose lists follow the same rules.
pub(crate) fn validate_name_list(
    kind: &str,
    list_field: &str,
    entries: &[String],
    levels: &[AccessLevel],
    validate_name: impl Fn(&str) -> Result<()>,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    for entry in entries {
        let (name, _) = split_entry(kind, levels, entry)?;
        validate_name(name)?;
        if !seen.insert(name) {
            return Err(Error::invalid_name(format!(
                "duplicate {kind} '{name}' in {list_field}"
            )));
        }
    }
    Ok(())
}

/// A field that is present and not `null`.
fn present_field<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    fields.get(key).filter(|value| !value.is_null())
}

fn required_string(fields: &Map<String, Value>, key: &str) -> Result<String> {
    match present_field(fields, key) {
        None => Err(Error::invalid_format(format!(
            "metadata is missing '{key}'"
        ))),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(Error::invalid_format(format!(
            "metadata '{key}' must be a string"
        ))),
    }
}

fn optional_string_list(fields: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    let Some(value) = present_field(fields, key) else {
        return Ok(Vec::new());
    };
    let not_a_list =
        || Error::invalid_format(format!("metadata '{key}' must be an array of strings"));
    let items = value.as_array().ok_or_else(not_a_list)?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_string).ok_or_else(not_a_list))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidName { reason }) => reason,
            other => panic!("expected an invalid name error, got {other:?}"),
        }
    }

    fn format_reason(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidPluginFormat { reason }) => reason,
            other => panic!("expected an invalid plugin format error, got {other:?}"),
        }
    }

    #[test]
    fn plugin_names_that_follow_every_rule_pass() {
        for name in [
            "a",
            "orders",
            "order-events",
            "order_events",
            "1st",
            "a1-b2_c3",
        ] {
            assert_eq!(validate_plugin_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_plugin_name(&"a".repeat(63)), Ok(()));
    }

    #[test]
    fn plugin_names_breaking_a_rule_name_that_rule() {
        assert!(reason(validate_plugin_name("")).contains("1 to 63 characters"));
        assert!(reason(validate_plugin_name(&"a".repeat(64))).contains("1 to 63 characters"));
        assert_eq!(
            reason(validate_plugin_name("Orders")),
            "plugin 'Orders' must use only a-z, 0-9, - and _"
        );
        assert!(reason(validate_plugin_name("a.b")).contains("must use only"));
        assert!(reason(validate_plugin_name("ordérs")).contains("must use only"));
        assert!(reason(validate_plugin_name("-a")).contains("must start with a letter or a digit"));
        assert!(reason(validate_plugin_name("_a")).contains("must start with"));
        assert!(reason(validate_plugin_name("a-")).contains("must not end with '-' or '_'"));
        assert!(reason(validate_plugin_name("a_")).contains("must not end with"));
        for (name, sequence) in [
            ("a--b", "--"),
            ("a__b", "__"),
            ("a-_b", "-_"),
            ("a_-b", "_-"),
        ] {
            assert!(
                reason(validate_plugin_name(name))
                    .contains(&format!("must not contain '{sequence}'")),
                "{name}"
            );
        }
    }

    #[test]
    fn reserved_plugin_names_are_refused() {
        for name in RESERVED_PLUGIN_NAMES {
            assert!(
                reason(validate_plugin_name(name)).contains("reserved"),
                "{name}"
            );
        }
        assert_eq!(validate_plugin_name("shared-data"), Ok(()));
        assert_eq!(validate_plugin_name("administration"), Ok(()));
        assert!(reason(validate_plugin_name("admin")).contains("reserved"));
    }

    #[test]
    fn table_names_follow_the_table_rule() {
        for name in ["users", "_users", "user_events", "u1"] {
            assert_eq!(validate_table_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_table_name(&"t".repeat(63)), Ok(()));
        assert_eq!(
            reason(validate_table_name("Users")),
            "table 'Users' must use only a-z, 0-9 and _"
        );
        assert!(reason(validate_table_name("")).contains("1 to 63"));
        assert!(reason(validate_table_name(&"t".repeat(64))).contains("1 to 63"));
        assert!(reason(validate_table_name("user-events")).contains("must use only"));
        assert!(reason(validate_table_name("1users")).contains("must start with a letter or _"));
        assert!(reason(validate_table_name("users_")).contains("must not end with '_'"));
        assert!(reason(validate_table_name("user__events")).contains("must not contain '__'"));
    }

    #[test]
    fn topic_names_follow_the_topic_rule() {
        for name in ["events", "order-events", "a.b_c-d", "_internal", "1", "-x"] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_topic_name(&"t".repeat(249)), Ok(()));
        assert!(reason(validate_topic_name("")).contains("1 to 249"));
        assert!(reason(validate_topic_name(&"t".repeat(250))).contains("1 to 249"));
        assert!(
            reason(validate_topic_name("Events")).contains("must use only a-z, 0-9, ., _ and -")
        );
        assert!(reason(validate_topic_name("a b")).contains("must use only"));
        assert!(reason(validate_topic_name("events.")).contains("must not end with '.'"));
        assert!(reason(validate_topic_name(".")).contains("must not end with '.'"));
        assert!(reason(validate_topic_name("a..b")).contains("must not contain '..'"));
    }

    #[test]
    fn consumer_group_names_follow_the_topic_rule_under_their_own_name() {
        assert_eq!(validate_consumer_group_name("g1.workers-a_b"), Ok(()));
        assert_eq!(
            reason(validate_consumer_group_name("G1")),
            "consumer group 'G1' must use only a-z, 0-9, ., _ and -"
        );
        assert!(reason(validate_consumer_group_name("g.")).contains("must not end with '.'"));
        assert!(reason(validate_consumer_group_name("")).contains("1 to 249"));
    }

    #[test]
    fn bucket_names_follow_the_bucket_rule() {
        for name in [
            "data",
            "abc",
            "my-bucket.v2",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.a",
        ] {
            assert_eq!(validate_bucket_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_bucket_name(&"b".repeat(63)), Ok(()));
        assert!(reason(validate_bucket_name("ab")).contains("3 to 63"));
        assert!(reason(validate_bucket_name(&"b".repeat(64))).contains("3 to 63"));
        assert!(
            reason(validate_bucket_name("my_bucket")).contains("must use only a-z, 0-9, . and -")
        );
        assert!(reason(validate_bucket_name("Data")).contains("must use only"));
        assert!(
            reason(validate_bucket_name("-data")).contains("must start with a letter or a digit")
        );
        assert!(reason(validate_bucket_name(".data")).contains("must start with"));
        assert!(reason(validate_bucket_name("data-")).contains("must not end with '-' or '.'"));
        assert!(reason(validate_bucket_name("data.")).contains("must not end with"));
        assert!(reason(validate_bucket_name("a..b")).contains("must not contain '..'"));
        assert_eq!(
            reason(validate_bucket_name("192.168.1.1")),
            "bucket '192.168.1.1' must not be an IPv4 address"
        );
        assert!(reason(validate_bucket_name("999.999.999.999")).contains("IPv4"));
    }

    #[test]
    fn dependency_specs_parse_names_and_exact_versions() {
        assert_eq!(
            DependencySpec::parse("users"),
            Ok(DependencySpec {
                name: "users".to_string(),
                version: None
            })
        );
        let pinned = DependencySpec::parse("users@1.4.0").expect("valid dependency");
        assert_eq!(pinned.name, "users");
        assert_eq!(pinned.version, Some(semver::Version::new(1, 4, 0)));
        assert_eq!(
            DependencySpec::parse("users@1.4.0-beta.1")
                .expect("valid dependency")
                .to_string(),
            "users@1.4.0-beta.1"
        );
    }

    #[test]
    fn dependency_specs_display_as_written() {
        for text in ["users", "users@1.4.0"] {
            assert_eq!(
                DependencySpec::parse(text)
                    .expect("valid dependency")
                    .to_string(),
                text
            );
        }
    }

    #[test]
    fn dependency_version_ranges_and_garbage_are_invalid_format() {
        for text in [
            "users@^1.0",
            "users@>=1",
            "users@~1.2.3",
            "users@1.x",
            "users@*",
            "users@=1.0.0",
        ] {
            assert!(
                format_reason(DependencySpec::parse(text)).contains("not a range"),
                "{text}"
            );
        }
        assert!(format_reason(DependencySpec::parse("users@")).contains("invalid version"));
        assert!(format_reason(DependencySpec::parse("users@banana")).contains("invalid version"));
        assert!(format_reason(DependencySpec::parse("users@1.0.0@2")).contains("invalid version"));
    }

    #[test]
    fn dependency_names_follow_the_plugin_rule() {
        assert!(reason(DependencySpec::parse("Users")).contains("must use only"));
        assert!(reason(DependencySpec::parse("")).contains("1 to 63"));
        assert!(reason(DependencySpec::parse("@1.0.0")).contains("1 to 63"));
        assert!(reason(DependencySpec::parse("warden")).contains("reserved"));
        assert!(reason(DependencySpec::parse("admin")).contains("reserved"));
    }

    fn full_metadata() -> Value {
        json!({
            "name": "orders",
            "version": "1.2.0",
            "description": "Order handling",
            "dependencies": ["users", "billing@2.0.1"],
            "allowedTables": ["orders"],
            "allowedTopics": ["order-events"],
            "allowedBuckets": ["invoices"],
            "somethingElse": {"ignored": true}
        })
    }

    #[test]
    fn manifests_parse_every_key() {
        let manifest = PluginManifest::from_json(&full_metadata()).expect("valid manifest");
        assert_eq!(
            manifest,
            PluginManifest {
                name: "orders".to_string(),
                version: semver::Version::new(1, 2, 0),
                description: Some("Order handling".to_string()),
                dependencies: vec![
                    DependencySpec {
                        name: "users".to_string(),
                        version: None
                    },
                    DependencySpec {
                        name: "billing".to_string(),
                        version: Some(semver::Version::new(2, 0, 1))
                    },
                ],
                allowed_tables: vec!["orders".to_string()],
                allowed_topics: vec!["order-events".to_string()],
                allowed_buckets: vec!["invoices".to_string()],
            }
        );
    }

    #[test]
    fn manifests_need_only_name_and_version() {
        let manifest = PluginManifest::from_json(&json!({"name": "tiny", "version": "0.1.0"}))
            .expect("valid manifest");
        assert_eq!(manifest.description, None);
        assert!(manifest.dependencies.is_empty());
        assert!(manifest.allowed_tables.is_empty());
        assert!(manifest.allowed_topics.is_empty());
        assert!(manifest.allowed_buckets.is_empty());
        let with_nulls = PluginManifest::from_json(
            &json!({"name": "tiny", "version": "0.1.0", "description": null, "allowedTables": null}),
        )
        .expect("null optional keys count as absent");
        assert_eq!(with_nulls, manifest);
    }

    #[test]
    fn manifests_with_a_wrong_shape_are_invalid_format() {
        assert!(format_reason(PluginManifest::from_json(&json!("orders")))
            .contains("must be an object"));
        assert!(
            format_reason(PluginManifest::from_json(&json!({"version": "1.0.0"})))
                .contains("missing 'name'")
        );
        assert!(
            format_reason(PluginManifest::from_json(&json!({"name": "a"})))
                .contains("missing 'version'")
        );
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": 5, "version": "1.0.0"})
        ))
        .contains("'name' must be a string"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": 1})
        ))
        .contains("'version' must be a string"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0"})
        ))
        .contains("not a semver version"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0.0", "description": 3})
        ))
        .contains("'description' must be a string"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0.0", "allowedTables": "users"})
        ))
        .contains("'allowedTables' must be an array of strings"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0.0", "allowedTopics": ["ok", 1]})
        ))
        .contains("'allowedTopics' must be an array of strings"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0.0", "dependencies": [{"name": "b"}]})
        ))
        .contains("'dependencies' must be an array of strings"));
        assert!(format_reason(PluginManifest::from_json(
            &json!({"name": "a", "version": "1.0.0", "dependencies": ["b@^1"]})
        ))
        .contains("not a range"));
    }

    #[test]
    fn manifests_check_every_name() {
        let with = |key: &str, value: Value| {
            let mut metadata = full_metadata();
            metadata[key] = value;
            PluginManifest::from_json(&metadata)
        };
        assert!(reason(with("name", json!("Orders"))).contains("plugin 'Orders'"));
        assert!(reason(with("name", json!("shared"))).contains("reserved"));
        assert!(
            reason(with("dependencies", json!(["bad--name"]))).contains("must not contain '--'")
        );
        assert!(reason(with("allowedTables", json!(["Users"]))).contains("table 'Users'"));
        assert!(reason(with("allowedTopics", json!(["a..b"]))).contains("topic 'a..b'"));
        assert!(reason(with("allowedBuckets", json!(["10.0.0.1"]))).contains("IPv4"));
    }

    #[test]
    fn manifests_refuse_duplicates_in_one_list() {
        let mut metadata = full_metadata();
        metadata["allowedTables"] = json!(["x", "y", "x"]);
        assert_eq!(
            reason(PluginManifest::from_json(&metadata)),
            "duplicate table 'x' in allowedTables"
        );
        let mut metadata = full_metadata();
        metadata["allowedTopics"] = json!(["e", "e"]);
        assert_eq!(
            reason(PluginManifest::from_json(&metadata)),
            "duplicate topic 'e' in allowedTopics"
        );
        let mut metadata = full_metadata();
        metadata["allowedBuckets"] = json!(["data", "data"]);
        assert_eq!(
            reason(PluginManifest::from_json(&metadata)),
            "duplicate bucket 'data' in allowedBuckets"
        );
        let mut metadata = full_metadata();
        metadata["dependencies"] = json!(["users", "users@1.0.0"]);
        assert!(reason(PluginManifest::from_json(&metadata))
            .contains("duplicate dependency on plugin 'users'"));
    }

    #[test]
    fn the_same_name_in_different_lists_is_allowed() {
        let mut metadata = full_metadata();
        metadata["allowedTables"] = json!(["events"]);
        metadata["allowedTopics"] = json!(["events"]);
        metadata["allowedBuckets"] = json!(["events"]);
        assert!(PluginManifest::from_json(&metadata).is_ok());
    }

    #[test]
    fn validate_catches_names_set_directly_on_the_struct() {
        let mut manifest = PluginManifest::from_json(&full_metadata()).expect("valid manifest");
        assert_eq!(manifest.validate(), Ok(()));
        manifest.dependencies.push(DependencySpec {
            name: "Bad".to_string(),
            version: None,
        });
        assert!(reason(manifest.validate()).contains("plugin 'Bad'"));
    }
}
