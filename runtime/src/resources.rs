//! Resource grants: declared lists plus operator overrides become physical names, computed only here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::access::{split_entry, AccessLevel, BUCKET_LEVELS, TABLE_LEVELS, TOPIC_LEVELS};
use crate::error::{Error, Result};
use crate::manifest::{
    validate_bucket_name, validate_consumer_group_name, validate_name_list, validate_plugin_name,
    validate_table_name, validate_topic_name, PluginManifest,
};

/// The prefix of a name-map value that sends a name to a shared resource instead of one private
/// to the plugin.
const SHARED_TARGET_PREFIX: &str = "shared:";

/// The prefix of every shared resource's physical name (`shared_` or `shared-` for buckets); the
/// plugin name `shared` is reserved so that no plugin's own resources can carry it.
const SHARED_PHYSICAL_PREFIX: &str = "shared";

/// PostgreSQL truncates identifiers to 63 bytes and S3 caps bucket names at 63 characters.
const TABLE_AND_BUCKET_LIMIT: usize = 63;

/// Kafka refuses topic names (and, in practice, group ids) longer than 249 characters.
const TOPIC_LIMIT: usize = 249;

/// The three kinds of resource a plugin can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Table,
    Topic,
    Bucket,
}

impl ResourceKind {
    /// Checks a name the plugin writes with this kind's naming rule.
    pub fn validate_name(self, name: &str) -> Result<()> {
        match self {
            ResourceKind::Table => validate_table_name(name),
            ResourceKind::Topic => validate_topic_name(name),
            ResourceKind::Bucket => validate_bucket_name(name),
        }
    }

    /// The manifest and overrides key of this kind's allowed list.
    pub fn allowed_list_field(self) -> &'static str {
        match self {
            ResourceKind::Table => "allowedTables",
            ResourceKind::Topic => "allowedTopics",
            ResourceKind::Bucket => "allowedBuckets",
        }
    }

    /// The overrides key of this kind's name map.
    pub fn name_map_field(self) -> &'static str {
        match self {
            ResourceKind::Table => "tableNameMap",
            ResourceKind::Topic => "topicNameMap",
            ResourceKind::Bucket => "bucketNameMap",
        }
    }

    /// The access levels of this kind, widest (the default) first.
    pub fn levels(self) -> &'static [AccessLevel] {
        match self {
            ResourceKind::Table => TABLE_LEVELS,
            ResourceKind::Topic => TOPIC_LEVELS,
            ResourceKind::Bucket => BUCKET_LEVELS,
        }
    }

    /// The longest physical name the backing store accepts, in bytes.
    pub fn physical_length_limit(self) -> usize {
        match self {
            ResourceKind::Table | ResourceKind::Bucket => TABLE_AND_BUCKET_LIMIT,
            ResourceKind::Topic => TOPIC_LIMIT,
        }
    }

    const ALL: [ResourceKind; 3] = [
        ResourceKind::Table,
        ResourceKind::Topic,
        ResourceKind::Bucket,
    ];
}

impl ResourceKind {
    /// `table`, `topic` or `bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Table => "table",
            ResourceKind::Topic => "topic",
            ResourceKind::Bucket => "bucket",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Operator overrides for one plugin name (the fields of `ADMIN_API.md`'s `Overrides`, in
/// snake_case).
///
/// An allowed list, when present, replaces the plugin's declared list of that kind. A name map
/// sends a name the plugin writes to another name, which is then prefixed as usual, or with a
/// `"shared:<name>"` value to the shared resource `<name>`. Name-map keys that name a resource
/// the plugin is not granted are simply unused: the maps rename grants, they never add any.
///
/// Its serde form is the `Overrides` JSON document, the one shape the admin API and the state
/// store share: camelCase fields, absent or `null` meaning unset, unknown fields refused, and
/// only the fields that are set written (so no overrides is `{}`). Names are not checked by
/// deserializing: [`ResourceOverrides::validate`] does that.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tables: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_topics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_buckets: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub table_name_map: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub topic_name_map: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub bucket_name_map: BTreeMap<String, String>,
}

/// A name map given as `null` is no map, as an absent one is.
fn null_as_empty<'de, D>(deserializer: D) -> std::result::Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    Ok(Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default())
}

impl ResourceOverrides {
    /// The allowed list of one kind, if the operator gave one.
    pub fn allowed(&self, kind: ResourceKind) -> Option<&[String]> {
        match kind {
            ResourceKind::Table => self.allowed_tables.as_deref(),
            ResourceKind::Topic => self.allowed_topics.as_deref(),
            ResourceKind::Bucket => self.allowed_buckets.as_deref(),
        }
    }

    /// The name map of one kind.
    pub fn name_map(&self, kind: ResourceKind) -> &BTreeMap<String, String> {
        match kind {
            ResourceKind::Table => &self.table_name_map,
            ResourceKind::Topic => &self.topic_name_map,
            ResourceKind::Bucket => &self.bucket_name_map,
        }
    }

    /// Checks that every name in the allowed lists and both sides of every map follow the kind's
    /// naming rule (a map value may be `"shared:<name>"`, where `<name>` follows the rule) and
    /// that no list names a resource twice. Errors are [`Error::InvalidName`] and say which
    /// field held the name.
    pub fn validate(&self) -> Result<()> {
        for kind in ResourceKind::ALL {
            if let Some(allowed) = self.allowed(kind) {
                let list_field = kind.allowed_list_field();
                validate_name_list(
                    &kind.to_string(),
                    list_field,
                    allowed,
                    kind.levels(),
                    |name| kind.validate_name(name),
                )
                .map_err(|error| in_field(error, list_field))?;
            }
            let map_field = kind.name_map_field();
            for (written_name, target) in self.name_map(kind) {
                kind.validate_name(written_name)
                    .map_err(|error| in_field(error, &format!("{map_field} key")))?;
                let target_name = match MapTarget::parse(target) {
                    MapTarget::Shared(name) | MapTarget::Private(name) => name,
                };
                kind.validate_name(target_name).map_err(|error| {
                    in_field(error, &format!("{map_field} value for '{written_name}'"))
                })?;
            }
        }
        Ok(())
    }
}

/// Adds where an invalid name was found to its message, so that an operator can find it in a
/// large overrides document.
fn in_field(error: Error, field: &str) -> Error {
    match error {
        Error::InvalidName { reason } => Error::invalid_name(format!("{reason} (in {field})")),
        other => other,
    }
}

/// Where a name-map value sends a name.
enum MapTarget<'a> {
    /// Another name private to the plugin, prefixed as usual.
    Private(&'a str),
    /// A shared resource, `shared_<name>` (`shared-<name>` for buckets).
    Shared(&'a str),
}

impl<'a> MapTarget<'a> {
    fn parse(value: &'a str) -> Self {
        match value.strip_prefix(SHARED_TARGET_PREFIX) {
            Some(shared_name) => MapTarget::Shared(shared_name),
            None => MapTarget::Private(value),
        }
    }
}

/// One resource a plugin may use: the name it writes, the name the store knows, and how much of
/// it the plugin may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub physical: String,
    pub access: AccessLevel,
    /// Mapped to a shared resource (`"shared:<name>"`), which other plugins may be granted too.
    pub shared: bool,
}

impl Grant {
    /// Refuses an operation on this `kind` of resource that needs `needed` when the grant holds
    /// less: the refusal names the resource, the level granted and the level needed.
    pub fn require(&self, kind: ResourceKind, needed: AccessLevel) -> Result<()> {
        if self.access.allows(needed) {
            return Ok(());
        }
        Err(Error::AccessLevelDenied {
            kind: kind.as_str(),
            name: self.name.clone(),
            granted: self.access.as_str(),
            needed: needed.as_str(),
        })
    }
}

/// Everything a plugin may use, by kind, in declared order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceGrants {
    pub tables: Vec<Grant>,
    pub topics: Vec<Grant>,
    pub buckets: Vec<Grant>,
}

impl ResourceGrants {
    /// Resolves the plugin's grants: the declared lists from the manifest, each replaced by the
    /// override's allowed list of that kind when present; each name sent through the kind's name
    /// map (a target is prefixed as usual, a `"shared:<n>"` target becomes the shared physical
    /// name); every physical name checked against its store's limit.
    ///
    /// The overrides are validated here, since they may come straight from an operator. The
    /// manifest lists are expected to be validated already (`PluginManifest::validate`), but a
    /// bad name in them still fails here rather than producing a bad physical name, because
    /// [`physical_name`] checks its inputs.
    /// [`ResourceGrants::resolve`] for the plugin `manifest` describes, with its declared lists.
    pub fn of_manifest(
        manifest: &PluginManifest,
        overrides: Option<&ResourceOverrides>,
    ) -> Result<Self> {
        Self::resolve(
            &manifest.name,
            &manifest.allowed_tables,
            &manifest.allowed_topics,
            &manifest.allowed_buckets,
            overrides,
        )
    }

    pub fn resolve(
        plugin: &str,
        manifest_tables: &[String],
        manifest_topics: &[String],
        manifest_buckets: &[String],
        overrides: Option<&ResourceOverrides>,
    ) -> Result<Self> {
        if let Some(overrides) = overrides {
            overrides.validate()?;
        }
        let resolve_kind = |kind: ResourceKind, declared: &[String]| -> Result<Vec<Grant>> {
            let names = overrides
                .and_then(|overrides| overrides.allowed(kind))
                .unwrap_or(declared);
            let name_map = overrides.map(|overrides| overrides.name_map(kind));
            let mut seen = BTreeSet::new();
            let mut grants = Vec::with_capacity(names.len());
            for entry in names {
                let (name, access) = split_entry(&kind.to_string(), kind.levels(), entry)?;
                kind.validate_name(name)?;
                if !seen.insert(name) {
                    return Err(Error::invalid_name(format!(
                        "duplicate {kind} '{name}' in {}",
                        kind.allowed_list_field()
                    )));
                }
                let target = name_map
                    .and_then(|name_map| name_map.get(name))
                    .map_or(MapTarget::Private(name), |value| MapTarget::parse(value));
                let (physical, shared) = match target {
                    MapTarget::Private(target) => (physical_name(kind, plugin, target)?, false),
                    MapTarget::Shared(target) => (shared_physical_name(kind, target)?, true),
                };
                grants.push(Grant {
                    name: name.to_owned(),
                    physical,
                    access,
                    shared,
                });
            }
            Ok(grants)
        };
        Ok(ResourceGrants {
            tables: resolve_kind(ResourceKind::Table, manifest_tables)?,
            topics: resolve_kind(ResourceKind::Topic, manifest_topics)?,
            buckets: resolve_kind(ResourceKind::Bucket, manifest_buckets)?,
        })
    }

    /// The grants of one kind, in declared order.
    pub fn grants(&self, kind: ResourceKind) -> &[Grant] {
        match kind {
            ResourceKind::Table => &self.tables,
            ResourceKind::Topic => &self.topics,
            ResourceKind::Bucket => &self.buckets,
        }
    }

    /// The physical name of a granted resource, or `None` when the plugin may not use `name`.
    pub fn physical(&self, kind: ResourceKind, name: &str) -> Option<&str> {
        // A plugin holds a handful of grants, so a scan beats building a map per plugin.
        self.grants(kind)
            .iter()
            .find(|grant| grant.name == name)
            .map(|grant| grant.physical.as_str())
    }

    /// The grant of `name`, or `None` when the plugin may not use it.
    pub fn grant(&self, kind: ResourceKind, name: &str) -> Option<&Grant> {
        self.grants(kind).iter().find(|grant| grant.name == name)
    }

    /// The names the plugin may use (unprefixed, without levels), in declared order.
    pub fn names(&self, kind: ResourceKind) -> Vec<String> {
        self.grants(kind)
            .iter()
            .map(|grant| grant.name.clone())
            .collect()
    }
}

/// The physical name of a resource private to `plugin` (see the table in `PLUGIN_API.md`):
/// table and topic `{plugin}_{name}`, bucket `{plugin with every _ replaced by ->}-{name}`
/// because S3 forbids `_`. The plugin name and `name` must follow their naming rules; the result
/// must fit the store's limit (63 bytes for tables and buckets, 249 for topics) and is never
/// truncated; a bucket name must also pass the bucket rule.
pub fn physical_name(kind: ResourceKind, plugin: &str, name: &str) -> Result<String> {
    validate_plugin_name(plugin)?;
    kind.validate_name(name)?;
    let physical = match kind {
        ResourceKind::Table | ResourceKind::Topic => format!("{plugin}_{name}"),
        ResourceKind::Bucket => format!("{}-{name}", plugin.replace('_', "-")),
    };
    check_physical_name(kind, physical)
}

/// The physical name of a shared resource: `shared_{name}` for tables and topics,
/// `shared-{name}` for buckets, with the same rules and limits as [`physical_name`].
pub fn shared_physical_name(kind: ResourceKind, name: &str) -> Result<String> {
    kind.validate_name(name)?;
    let physical = match kind {
        ResourceKind::Table | ResourceKind::Topic => format!("{SHARED_PHYSICAL_PREFIX}_{name}"),
        ResourceKind::Bucket => format!("{SHARED_PHYSICAL_PREFIX}-{name}"),
    };
    check_physical_name(kind, physical)
}

/// The Kafka consumer group id for a group a plugin names: `{plugin}_{group}`. The group follows
/// the topic naming rule and the result the topic limit (249 bytes).
pub fn consumer_group_name(plugin: &str, group: &str) -> Result<String> {
    validate_plugin_name(plugin)?;
    validate_consumer_group_name(group)?;
    let physical = format!("{plugin}_{group}");
    check_length("consumer group", &physical, TOPIC_LIMIT)?;
    Ok(physical)
}

/// The PostgreSQL login role a plugin's statements run as: `{database}.{plugin}`. Roles belong to
/// the whole PostgreSQL server, so the database is part of the name (two deployments on one
/// server never share a role), and the `.` cannot occur in a plugin name, so no two pairs of
/// database and plugin give one role. Like every physical name it is never truncated: one over
/// PostgreSQL's 63 bytes refuses the load.
pub fn database_role_name(database: &str, plugin: &str) -> Result<String> {
    validate_plugin_name(plugin)?;
    let role = format!("{database}.{plugin}");
    check_length("database role", &role, TABLE_AND_BUCKET_LIMIT)?;
    Ok(role)
}

/// The first of `others` (plugin names, loaded or holding a claimed prefix) whose name prefix
/// overlaps `plugin`'s, counting the shared resources' prefix as one more: physical names are
/// `<plugin>_<name>` (buckets `<plugin>-<name>`, `_` as `-`), so with `shop` and `shop_x`,
/// `shop`'s `x_users` and `shop_x`'s `users` would meet, for tables, indexes, constraints,
/// topics and buckets alike. A plugin never overlaps itself.
pub fn overlapping_prefix<'a>(
    plugin: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> Option<PrefixOverlap<'a>> {
    let normalized = |name: &str| format!("{}-", name.replace('_', "-"));
    let candidate = normalized(plugin);
    let overlaps = |other: &str| {
        let other = normalized(other);
        candidate.starts_with(&other) || other.starts_with(&candidate)
    };
    if overlaps(SHARED_PHYSICAL_PREFIX) {
        return Some(PrefixOverlap::Shared);
    }
    others
        .into_iter()
        .filter(|other| *other != plugin)
        .find(|other| overlaps(other))
        .map(PrefixOverlap::Plugin)
}

/// What a plugin name's prefix overlaps (see [`overlapping_prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixOverlap<'a> {
    /// The prefix of shared resources (`shared_`).
    Shared,
    /// Another plugin's prefix.
    Plugin(&'a str),
}

fn check_physical_name(kind: ResourceKind, physical: String) -> Result<String> {
    check_length(&kind.to_string(), &physical, kind.physical_length_limit())?;
    if kind == ResourceKind::Bucket {
        validate_bucket_name(&physical)?;
    }
    Ok(physical)
}

fn check_length(kind: &str, physical: &str, limit: usize) -> Result<()> {
    if physical.len() > limit {
        return Err(Error::invalid_name(format!(
            "physical {kind} name '{physical}' is {} bytes, over the {limit}-byte limit (names are never truncated)",
            physical.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_round_trip_through_the_api_shape() {
        let overrides = ResourceOverrides {
            allowed_tables: Some(vec!["users".to_owned(), "orders".to_owned()]),
            allowed_topics: Some(Vec::new()),
            allowed_buckets: None,
            table_name_map: map(&[("users", "shared:users")]),
            topic_name_map: BTreeMap::new(),
            bucket_name_map: map(&[("data", "archive")]),
        };
        let document = serde_json::to_value(&overrides).expect("serializes");
        assert_eq!(
            document,
            serde_json::json!({
                "allowedTables": ["users", "orders"],
                "allowedTopics": [],
                "tableNameMap": {"users": "shared:users"},
                "bucketNameMap": {"data": "archive"},
            })
        );
        assert_eq!(
            serde_json::from_value::<ResourceOverrides>(document).expect("reads back"),
            overrides
        );
        assert_eq!(
            serde_json::to_value(ResourceOverrides::default()).expect("serializes"),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::from_value::<ResourceOverrides>(
                serde_json::json!({"allowedBuckets": null, "topicNameMap": null})
            )
            .expect("nulls are unset"),
            ResourceOverrides::default()
        );
    }

    #[test]
    fn malformed_overrides_are_refused_with_the_field() {
        let cases = [
            (serde_json::json!("users"), "struct ResourceOverrides"),
            (serde_json::json!({"allowedTables": "users"}), "a sequence"),
            (serde_json::json!({"allowedTopics": [1]}), "a string"),
            (
                serde_json::json!({"tableNameMap": {"users": 1}}),
                "a string",
            ),
            (serde_json::json!({"bucketNameMap": []}), "a map"),
            (serde_json::json!({"allowed_tables": []}), "allowed_tables"),
        ];
        for (document, expected) in cases {
            let error = serde_json::from_value::<ResourceOverrides>(document.clone())
                .expect_err("refused")
                .to_string();
            assert!(error.contains(expected), "{document}: {error}");
        }
    }

    #[test]
    fn prefixes_overlap_when_one_name_extends_the_other_at_a_separator() {
        let loaded = ["shop", "billing"];
        assert_eq!(
            overlapping_prefix("shop_x", loaded),
            Some(PrefixOverlap::Plugin("shop"))
        );
        // `-` and `_` are one separator in bucket names.
        assert_eq!(
            overlapping_prefix("shop-x", loaded),
            Some(PrefixOverlap::Plugin("shop"))
        );
        assert_eq!(
            overlapping_prefix("bill", ["billing_eu"]),
            None,
            "a prefix that is not followed by a separator does not overlap"
        );
        assert_eq!(
            overlapping_prefix("billing", ["billing_eu"]),
            Some(PrefixOverlap::Plugin("billing_eu"))
        );
        assert_eq!(overlapping_prefix("shopping", loaded), None);
        assert_eq!(overlapping_prefix("shop", loaded), None, "never itself");
    }

    #[test]
    fn the_shared_prefix_overlaps_like_a_plugin() {
        assert_eq!(
            overlapping_prefix("shared_x", []),
            Some(PrefixOverlap::Shared)
        );
        assert_eq!(
            overlapping_prefix("shared-x", []),
            Some(PrefixOverlap::Shared)
        );
        assert_eq!(overlapping_prefix("sharedx", []), None);
    }

    fn reason(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidName { reason }) => reason,
            other => panic!("expected an invalid name error, got {other:?}"),
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn database_roles_join_database_and_plugin_with_a_dot_and_are_never_truncated() {
        assert_eq!(
            database_role_name("warden", "orders"),
            Ok("warden.orders".to_string())
        );
        // A plugin name holds no '.', so the database part is always what precedes the last one.
        assert_ne!(
            database_role_name("a.b", "c"),
            database_role_name("a", "b-c")
        );
        let long_plugin = "p".repeat(57);
        assert_eq!(
            database_role_name("warden", &long_plugin).map(|role| role.len()),
            Ok(64).map(|_: usize| 64).and(Err(Error::invalid_name(format!(
                "physical database role name 'warden.{long_plugin}' is 64 bytes, over the 63-byte limit (names are never truncated)"
            ))))
        );
        assert!(database_role_name("warden", "Bad Name").is_err());
    }

    #[test]
    fn kinds_display_as_lowercase_words() {
        assert_eq!(ResourceKind::Table.to_string(), "table");
        assert_eq!(ResourceKind::Topic.to_string(), "topic");
        assert_eq!(ResourceKind::Bucket.to_string(), "bucket");
    }

    #[test]
    fn physical_names_follow_the_plugin_api_table() {
        assert_eq!(
            physical_name(ResourceKind::Table, "orders", "users"),
            Ok("orders_users".to_string())
        );
        assert_eq!(
            physical_name(ResourceKind::Topic, "orders", "events"),
            Ok("orders_events".to_string())
        );
        assert_eq!(
            physical_name(ResourceKind::Bucket, "orders", "data"),
            Ok("orders-data".to_string())
        );
        assert_eq!(
            consumer_group_name("orders", "g1"),
            Ok("orders_g1".to_string())
        );
        // A table of a plugin with '-' is kept as is; quoting it is the SQL layer's job.
        assert_eq!(
            physical_name(ResourceKind::Table, "order-service", "users"),
            Ok("order-service_users".to_string())
        );
    }

    #[test]
    fn bucket_names_replace_every_underscore_of_the_plugin_name() {
        assert_eq!(
            physical_name(ResourceKind::Bucket, "order_service_v2", "invoices.2024"),
            Ok("order-service-v2-invoices.2024".to_string())
        );
    }

    #[test]
    fn shared_physical_names_use_the_shared_prefix() {
        assert_eq!(
            shared_physical_name(ResourceKind::Table, "users"),
            Ok("shared_users".to_string())
        );
        assert_eq!(
            shared_physical_name(ResourceKind::Topic, "events"),
            Ok("shared_events".to_string())
        );
        assert_eq!(
            shared_physical_name(ResourceKind::Bucket, "data"),
            Ok("shared-data".to_string())
        );
    }

    #[test]
    fn physical_names_over_the_store_limit_are_refused_not_truncated() {
        // 5 + 1 + 57 = 63 bytes fits; one more does not.
        let fits = "t".repeat(57);
        assert_eq!(
            physical_name(ResourceKind::Table, "ordrs", &fits).map(|name| name.len()),
            Ok(63)
        );
        let too_long = "t".repeat(58);
        let message = reason(physical_name(ResourceKind::Table, "ordrs", &too_long));
        assert_eq!(
            message,
            format!("physical table name 'ordrs_{too_long}' is 64 bytes, over the 63-byte limit (names are never truncated)")
        );
        assert!(reason(physical_name(
            ResourceKind::Bucket,
            "ordrs",
            &"b".repeat(58)
        ))
        .contains("over the 63-byte limit"));
        assert_eq!(
            physical_name(ResourceKind::Bucket, "ordrs", &"b".repeat(57)).map(|name| name.len()),
            Ok(63)
        );
        assert!(physical_name(ResourceKind::Topic, "ordrs", &"t".repeat(243)).is_ok());
        assert!(reason(physical_name(
            ResourceKind::Topic,
            "ordrs",
            &"t".repeat(244)
        ))
        .contains("249-byte limit"));
        assert!(consumer_group_name("ordrs", &"g".repeat(243)).is_ok());
        assert!(reason(consumer_group_name("ordrs", &"g".repeat(244)))
            .contains("physical consumer group name"));
        assert!(
            reason(shared_physical_name(ResourceKind::Table, &"t".repeat(57))).contains("64 bytes")
        );
        assert!(shared_physical_name(ResourceKind::Table, &"t".repeat(56)).is_ok());
    }

    #[test]
    fn physical_names_check_their_inputs() {
        assert!(
            reason(physical_name(ResourceKind::Table, "Orders", "users"))
                .contains("plugin 'Orders'")
        );
        assert!(reason(physical_name(ResourceKind::Table, "shared", "users")).contains("reserved"));
        assert!(
            reason(physical_name(ResourceKind::Table, "orders", "Users")).contains("table 'Users'")
        );
        assert!(
            reason(physical_name(ResourceKind::Topic, "orders", "a..b")).contains("topic 'a..b'")
        );
        assert!(
            reason(physical_name(ResourceKind::Bucket, "orders", "my_data"))
                .contains("bucket 'my_data'")
        );
        assert!(reason(shared_physical_name(ResourceKind::Bucket, "x")).contains("3 to 63"));
        assert!(reason(consumer_group_name("orders", "G1")).contains("consumer group 'G1'"));
        assert!(reason(consumer_group_name("-bad", "g1")).contains("plugin '-bad'"));
    }

    #[test]
    fn declared_lists_become_grants_in_declared_order() {
        let grants = ResourceGrants::resolve(
            "orders",
            &strings(&["orders", "items"]),
            &strings(&["order-events"]),
            &strings(&["invoices"]),
            None,
        )
        .expect("valid grants");
        assert_eq!(
            grants.names(ResourceKind::Table),
            strings(&["orders", "items"])
        );
        assert_eq!(
            grants.physical(ResourceKind::Table, "items"),
            Some("orders_items")
        );
        assert_eq!(
            grants.physical(ResourceKind::Topic, "order-events"),
            Some("orders_order-events")
        );
        assert_eq!(
            grants.physical(ResourceKind::Bucket, "invoices"),
            Some("orders-invoices")
        );
        assert_eq!(grants.physical(ResourceKind::Table, "invoices"), None);
        assert_eq!(grants.physical(ResourceKind::Table, "orders_items"), None);
        assert_eq!(grants.grants(ResourceKind::Topic).len(), 1);
        assert_eq!(
            ResourceGrants::resolve("orders", &[], &[], &[], None),
            Ok(ResourceGrants::default())
        );
    }

    #[test]
    fn allowed_lists_in_overrides_replace_declared_lists_per_kind() {
        let overrides = ResourceOverrides {
            allowed_tables: Some(strings(&["users"])),
            allowed_buckets: Some(Vec::new()),
            ..ResourceOverrides::default()
        };
        let grants = ResourceGrants::resolve(
            "orders",
            &strings(&["orders"]),
            &strings(&["events"]),
            &strings(&["invoices"]),
            Some(&overrides),
        )
        .expect("valid grants");
        assert_eq!(grants.names(ResourceKind::Table), strings(&["users"]));
        assert_eq!(grants.physical(ResourceKind::Table, "orders"), None);
        // No allowedTopics override: the declared list stays.
        assert_eq!(grants.names(ResourceKind::Topic), strings(&["events"]));
        // An empty list is a list: it takes every bucket away.
        assert!(grants.names(ResourceKind::Bucket).is_empty());
    }

    #[test]
    fn name_maps_rename_private_resources_and_reach_shared_ones() {
        let overrides = ResourceOverrides {
            table_name_map: map(&[("users", "crm_users"), ("unused", "x")]),
            topic_name_map: map(&[("events", "shared:events")]),
            bucket_name_map: map(&[("data", "shared:common-data"), ("logs", "archive")]),
            ..ResourceOverrides::default()
        };
        let grants = ResourceGrants::resolve(
            "orders",
            &strings(&["users", "orders"]),
            &strings(&["events"]),
            &strings(&["data", "logs"]),
            Some(&overrides),
        )
        .expect("valid grants");
        assert_eq!(
            grants.physical(ResourceKind::Table, "users"),
            Some("orders_crm_users")
        );
        assert_eq!(
            grants.physical(ResourceKind::Table, "orders"),
            Some("orders_orders")
        );
        assert_eq!(
            grants.physical(ResourceKind::Topic, "events"),
            Some("shared_events")
        );
        assert_eq!(
            grants.physical(ResourceKind::Bucket, "data"),
            Some("shared-common-data")
        );
        assert_eq!(
            grants.physical(ResourceKind::Bucket, "logs"),
            Some("orders-archive")
        );
        // A map key the plugin is not granted adds nothing.
        assert_eq!(grants.physical(ResourceKind::Table, "unused"), None);
        assert_eq!(grants.physical(ResourceKind::Table, "x"), None);
        assert_eq!(
            grants.names(ResourceKind::Table),
            strings(&["users", "orders"])
        );
    }

    #[test]
    fn two_plugins_reach_one_shared_table_only_through_overrides() {
        let overrides = ResourceOverrides {
            table_name_map: map(&[("users", "shared:users")]),
            ..ResourceOverrides::default()
        };
        let first =
            ResourceGrants::resolve("crm", &strings(&["users"]), &[], &[], Some(&overrides))
                .expect("valid grants");
        let second =
            ResourceGrants::resolve("billing", &strings(&["users"]), &[], &[], Some(&overrides))
                .expect("valid grants");
        assert_eq!(
            first.physical(ResourceKind::Table, "users"),
            Some("shared_users")
        );
        assert_eq!(
            second.physical(ResourceKind::Table, "users"),
            Some("shared_users")
        );
        let without = ResourceGrants::resolve("billing", &strings(&["users"]), &[], &[], None)
            .expect("valid grants");
        assert_eq!(
            without.physical(ResourceKind::Table, "users"),
            Some("billing_users")
        );
    }

    #[test]
    fn override_validation_accepts_valid_overrides() {
        let overrides = ResourceOverrides {
            allowed_tables: Some(strings(&["users", "orders"])),
            allowed_topics: Some(strings(&["events"])),
            allowed_buckets: Some(strings(&["data"])),
            table_name_map: map(&[("users", "crm_users"), ("orders", "shared:orders")]),
            topic_name_map: map(&[("events", "shared:events.v2")]),
            bucket_name_map: map(&[("data", "shared:data-1")]),
        };
        assert_eq!(overrides.validate(), Ok(()));
        assert_eq!(ResourceOverrides::default().validate(), Ok(()));
    }

    #[test]
    fn override_validation_names_the_field_and_the_rule() {
        let list = ResourceOverrides {
            allowed_tables: Some(strings(&["Users"])),
            ..ResourceOverrides::default()
        };
        assert_eq!(
            reason(list.validate()),
            "table 'Users' must use only a-z, 0-9 and _ (in allowedTables)"
        );
        let duplicate = ResourceOverrides {
            allowed_topics: Some(strings(&["events", "events"])),
            ..ResourceOverrides::default()
        };
        assert!(
            reason(duplicate.validate()).starts_with("duplicate topic 'events' in allowedTopics")
        );
        let bucket = ResourceOverrides {
            allowed_buckets: Some(strings(&["10.0.0.1"])),
            ..ResourceOverrides::default()
        };
        assert!(reason(bucket.validate()).contains("IPv4"));
        let key = ResourceOverrides {
            table_name_map: map(&[("Users", "users")]),
            ..ResourceOverrides::default()
        };
        assert!(reason(key.validate()).contains("(in tableNameMap key)"));
        let value = ResourceOverrides {
            topic_name_map: map(&[("events", "a..b")]),
            ..ResourceOverrides::default()
        };
        assert!(reason(value.validate())
            .contains("topic 'a..b' must not contain '..' (in topicNameMap value for 'events')"));
        let shared_value = ResourceOverrides {
            bucket_name_map: map(&[("data", "shared:x_y")]),
            ..ResourceOverrides::default()
        };
        assert!(reason(shared_value.validate()).contains("bucket 'x_y'"));
        let empty_shared = ResourceOverrides {
            table_name_map: map(&[("users", "shared:")]),
            ..ResourceOverrides::default()
        };
        assert!(reason(empty_shared.validate()).contains("1 to 63"));
        let other_plugin = ResourceOverrides {
            table_name_map: map(&[("users", "billing:users")]),
            ..ResourceOverrides::default()
        };
        assert!(reason(other_plugin.validate()).contains("must use only"));
    }

    #[test]
    fn resolve_validates_overrides_and_limits() {
        let bad = ResourceOverrides {
            allowed_tables: Some(strings(&["a__b"])),
            ..ResourceOverrides::default()
        };
        assert!(
            reason(ResourceGrants::resolve("orders", &[], &[], &[], Some(&bad)))
                .contains("must not contain '__'")
        );
        // The override's target is valid but the prefixed result is too long.
        let long_target = ResourceOverrides {
            table_name_map: map(&[("users", &"t".repeat(60))]),
            ..ResourceOverrides::default()
        };
        assert!(reason(ResourceGrants::resolve(
            "orders",
            &strings(&["users"]),
            &[],
            &[],
            Some(&long_target)
        ))
        .contains("never truncated"));
        // Declared lists are checked too, rather than trusted into a bad physical name.
        assert!(reason(ResourceGrants::resolve(
            "orders",
            &strings(&["Users"]),
            &[],
            &[],
            None
        ))
        .contains("table 'Users'"));
        assert_eq!(
            reason(ResourceGrants::resolve(
                "orders",
                &[],
                &[],
                &strings(&["data", "data"]),
                None
            )),
            "duplicate bucket 'data' in allowedBuckets"
        );
        assert!(reason(ResourceGrants::resolve(
            "Orders",
            &strings(&["users"]),
            &[],
            &[],
            None
        ))
        .contains("plugin 'Orders'"));
    }
}
