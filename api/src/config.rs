//! Settings: built-in defaults < `warden.toml` (or `--config`) < environment < flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use warden_actors::gateways::kafka::{DEFAULT_MAX_CONSUMERS_PER_PLUGIN, DEFAULT_TOPIC_PARTITIONS};
use warden_actors::gateways::DatabaseSettings;
use warden_runtime::PluginLimits;

/// Connections in Warden's own pool, and the budget of all plugins' connections together.
const DEFAULT_DATABASE_POOL_SIZE: usize = 16;

/// The token `--dev` uses when no `WARDEN_ADMIN_TOKEN` is set.
pub const DEV_TOKEN: &str = "dev-token";

/// Warden: a runtime for backend plugins.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the runtime and the admin server until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

/// Flags of `warden serve`; each overrides the file and the environment.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Settings file (default: ./warden.toml when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Admin listen address.
    #[arg(long)]
    pub bind: Option<String>,
    /// Public listener for plugins' HTTP routes (`off` disables it).
    #[arg(long)]
    pub http_bind: Option<String>,
    /// Plugins directory.
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// Load every plugin in the directory at start.
    #[arg(long, overrides_with = "no_load_all")]
    pub load_all: bool,
    /// Do not load the plugins directory at start.
    #[arg(long)]
    pub no_load_all: bool,
    /// Watch the plugins directory and reload changed plugins.
    #[arg(long)]
    pub watch: bool,
    /// Development mode: use the token `dev-token` when none is configured.
    #[arg(long)]
    pub dev: bool,
    /// This node's id, under which it keeps its durable state.
    #[arg(long)]
    pub node_id: Option<String>,
    /// The cluster this node joins (absent: a single node).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Every setting of `warden serve` (names match `warden.toml` keys and `WARDEN_*` variables).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub bind: String,
    /// The public listener for plugins' HTTP routes, or `off`.
    pub http_bind: String,
    /// The largest request body on the public listener.
    pub http_max_body_bytes: usize,
    pub admin_token: Option<String>,
    pub plugins_dir: PathBuf,
    pub load_all: bool,
    pub watch: bool,
    pub database_url: Option<String>,
    pub kafka_brokers: Option<String>,
    pub ksqldb_url: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key: Option<String>,
    pub s3_secret_key: Option<String>,
    /// Garage's admin API (`http://host:3903`); with the token, each plugin gets its own S3 key.
    pub s3_admin_url: Option<String>,
    /// A bearer token of Garage's admin API.
    pub s3_admin_token: Option<String>,
    pub plugin_memory_mb: u64,
    pub plugin_call_timeout_ms: u64,
    /// Largest event `data` or call argument list, in bytes of serialized JSON.
    pub plugin_max_message_bytes: usize,
    /// Log bytes one plugin may write per second; the rest is dropped.
    pub plugin_log_bytes_per_s: u64,
    /// Timers one plugin may have pending at once.
    pub plugin_max_timers: usize,
    pub plugin_max_restarts: u32,
    pub plugin_restart_window_s: u64,
    /// Arbiter threads plugin actors run on (default: one per core).
    pub plugin_threads: Option<usize>,
    /// Events one plugin may have queued before more are dropped for it.
    pub event_queue_capacity: usize,
    /// Connections in Warden's own PostgreSQL pool, and the budget of all plugins' connections.
    pub database_pool_size: usize,
    /// Run each plugin's SQL as its own PostgreSQL login role.
    pub database_roles: bool,
    /// Most connections one plugin holds at once (default: a quarter of the pool, at least 1).
    pub database_connections_per_plugin: Option<usize>,
    /// Most rows one query returns to a plugin.
    pub database_max_rows: usize,
    /// Most bytes one query returns to a plugin.
    pub database_max_result_bytes: usize,
    /// Kafka consumers one plugin may have at once.
    pub plugin_max_consumers: usize,
    /// Partitions of the topics Warden creates.
    pub kafka_topic_partitions: u32,
    /// This node's id (default: see [`Settings::node_id`]).
    pub node_id: Option<String>,
    /// The cluster this node is part of, or `None` for a single node.
    pub cluster: Option<String>,
    /// A node unseen this many seconds is `down`.
    pub node_timeout_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        // The plugin limits' defaults live with the limits, so the runtime and the binary agree.
        let limits = PluginLimits::default();
        let database = DatabaseSettings::with_pool_size(DEFAULT_DATABASE_POOL_SIZE);
        Settings {
            bind: "127.0.0.1:8080".into(),
            http_bind: "127.0.0.1:8081".into(),
            http_max_body_bytes: 1_048_576,
            admin_token: None,
            plugins_dir: PathBuf::from("./plugins"),
            load_all: true,
            watch: false,
            database_url: None,
            kafka_brokers: None,
            ksqldb_url: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
            s3_admin_url: None,
            s3_admin_token: None,
            plugin_memory_mb: limits.memory_limit_mb,
            plugin_call_timeout_ms: limits.call_timeout_ms,
            plugin_max_message_bytes: limits.max_message_bytes,
            plugin_log_bytes_per_s: limits.log_bytes_per_second,
            plugin_max_timers: limits.max_timers,
            plugin_max_restarts: 5,
            plugin_restart_window_s: 60,
            plugin_threads: None,
            event_queue_capacity: 10_000,
            database_pool_size: database.pool_size,
            database_roles: database.roles,
            database_connections_per_plugin: None,
            database_max_rows: database.max_rows,
            database_max_result_bytes: database.max_result_bytes,
            plugin_max_consumers: DEFAULT_MAX_CONSUMERS_PER_PLUGIN,
            kafka_topic_partitions: DEFAULT_TOPIC_PARTITIONS,
            node_id: None,
            cluster: None,
            node_timeout_s: 10,
        }
    }
}

/// Flags given on the command line, as a layer above the environment.
#[derive(Serialize)]
struct FlagLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
}

impl Settings {
    /// The database settings beyond the URL; the statement limit is the plugin call limit.
    pub fn database_settings(&self) -> DatabaseSettings {
        let defaults = DatabaseSettings::with_pool_size(self.database_pool_size);
        DatabaseSettings {
            roles: self.database_roles,
            connections_per_plugin: self
                .database_connections_per_plugin
                .unwrap_or(defaults.connections_per_plugin),
            max_rows: self.database_max_rows,
            max_result_bytes: self.database_max_result_bytes,
            statement_timeout: std::time::Duration::from_millis(self.plugin_call_timeout_ms),
            cluster: self.cluster.clone(),
            ..defaults
        }
    }

    /// Reads the settings in order of precedence and checks them.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match &args.config {
            Some(path) => {
                anyhow::ensure!(
                    path.is_file(),
                    "settings file '{}' does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("warden.toml")),
        }
        let load_all = match (args.load_all, args.no_load_all) {
            (_, true) => Some(false),
            (true, false) => Some(true),
            (false, false) => None,
        };
        figment = figment
            .merge(Env::prefixed("WARDEN_"))
            .merge(Serialized::defaults(FlagLayer {
                bind: args.bind.clone(),
                http_bind: args.http_bind.clone(),
                plugins_dir: args.plugins_dir.clone(),
                load_all,
                watch: args.watch.then_some(true),
                node_id: args.node_id.clone(),
                cluster: args.cluster.clone(),
            }));
        let mut settings: Settings = figment.extract().context("invalid settings")?;
        if settings.admin_token.as_deref().is_none_or(str::is_empty) {
            anyhow::ensure!(
                args.dev,
                "WARDEN_ADMIN_TOKEN is not set: set it, or run with --dev to use the development token"
            );
            settings.admin_token = Some(DEV_TOKEN.into());
            tracing::warn!("--dev: the admin token is '{DEV_TOKEN}'; never use this in production");
        }
        settings
            .bind_address()
            .with_context(|| format!("invalid bind address '{}'", settings.bind))?;
        settings.http_bind_address().with_context(|| {
            format!(
                "invalid public listener address '{}' (WARDEN_HTTP_BIND): give host:port, or off",
                settings.http_bind
            )
        })?;
        anyhow::ensure!(
            settings.http_max_body_bytes > 0,
            "WARDEN_HTTP_MAX_BODY_BYTES must be positive"
        );
        anyhow::ensure!(
            settings.plugin_memory_mb > 0,
            "WARDEN_PLUGIN_MEMORY_MB must be positive"
        );
        anyhow::ensure!(
            settings.plugin_call_timeout_ms > 0,
            "WARDEN_PLUGIN_CALL_TIMEOUT_MS must be positive"
        );
        anyhow::ensure!(
            settings.plugin_max_message_bytes > 0,
            "WARDEN_PLUGIN_MAX_MESSAGE_BYTES must be positive"
        );
        anyhow::ensure!(
            settings.plugin_log_bytes_per_s > 0,
            "WARDEN_PLUGIN_LOG_BYTES_PER_S must be positive"
        );
        anyhow::ensure!(
            settings.plugin_max_timers > 0,
            "WARDEN_PLUGIN_MAX_TIMERS must be positive"
        );
        anyhow::ensure!(
            settings.database_connections_per_plugin != Some(0),
            "WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN must be positive"
        );
        anyhow::ensure!(
            settings.plugin_max_consumers > 0,
            "WARDEN_PLUGIN_MAX_CONSUMERS must be positive"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&settings.kafka_topic_partitions),
            "WARDEN_KAFKA_TOPIC_PARTITIONS must be 1 to 10000"
        );
        if let Some(node_id) = &settings.node_id {
            check_node_id(node_id)?;
        }
        anyhow::ensure!(
            settings.node_timeout_s > 0,
            "WARDEN_NODE_TIMEOUT_S must be positive"
        );
        if let Some(cluster) = &settings.cluster {
            check_cluster(cluster, &settings)?;
        }
        Ok(settings)
    }

    /// This node's id: the one configured, or `<hostname>-<the first 8 hex digits of the SHA-256
    /// of the canonical plugins directory path>` (`ADMIN_API.md`), which stays the same across
    /// restarts of one deployment and differs between deployments on one machine.
    pub fn node_id(&self) -> anyhow::Result<String> {
        if let Some(node_id) = &self.node_id {
            return Ok(node_id.clone());
        }
        let directory = self.plugins_dir.canonicalize().with_context(|| {
            format!(
                "cannot resolve the plugins directory '{}'",
                self.plugins_dir.display()
            )
        })?;
        Ok(default_node_id(&host_name(), &directory))
    }

    /// The per-plugin limits these settings give.
    pub fn plugin_limits(&self) -> PluginLimits {
        PluginLimits {
            memory_limit_mb: self.plugin_memory_mb,
            call_timeout_ms: self.plugin_call_timeout_ms,
            max_message_bytes: self.plugin_max_message_bytes,
            log_bytes_per_second: self.plugin_log_bytes_per_s,
            max_timers: self.plugin_max_timers,
        }
    }

    /// The admin listen address.
    pub fn bind_address(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.bind.parse()?)
    }

    /// The public listener's address, or `None` when it is `off`.
    pub fn http_bind_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.http_bind.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        Ok(Some(self.http_bind.parse()?))
    }
}

/// Node ids are written in logs, metrics and the state store: hostname characters only.
const MAX_NODE_ID_BYTES: usize = 128;

fn check_node_id(node_id: &str) -> anyhow::Result<()> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || "-_.".contains(character);
    anyhow::ensure!(
        !node_id.is_empty() && node_id.len() <= MAX_NODE_ID_BYTES && node_id.chars().all(allowed),
        "invalid node id '{node_id}': use 1 to {MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.'"
    );
    Ok(())
}

/// A cluster name follows the plugin naming rules, and a cluster needs the database (its
/// desired state and heartbeats) and Kafka (its events).
fn check_cluster(cluster: &str, settings: &Settings) -> anyhow::Result<()> {
    warden_runtime::manifest::validate_plugin_name(cluster)
        .map_err(|error| anyhow::anyhow!("invalid cluster name '{cluster}': {error}"))?;
    anyhow::ensure!(
        settings.database_url.is_some(),
        "--cluster needs WARDEN_DATABASE_URL: a cluster keeps its state in PostgreSQL"
    );
    anyhow::ensure!(
        settings.kafka_brokers.is_some(),
        "--cluster needs WARDEN_KAFKA_BROKERS: a cluster's events travel through Kafka"
    );
    Ok(())
}

fn default_node_id(host: &str, plugins_dir: &std::path::Path) -> String {
    let digest = warden_runtime::sha256_hex(plugins_dir.as_os_str().as_encoded_bytes());
    format!("{host}-{}", &digest[..8])
}

/// The machine's host name, kept to node-id characters (`localhost` when it cannot be read).
fn host_name() -> String {
    let read = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let kept: String = read
        .trim()
        .chars()
        .filter(|character| character.is_ascii_alphanumeric() || "-_.".contains(*character))
        .take(MAX_NODE_ID_BYTES - 9)
        .collect();
    if kept.is_empty() {
        "localhost".to_owned()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    // `figment::Jail`'s closures return figment's own (large) error type.
    #![allow(clippy::result_large_err)]

    use super::*;

    #[test]
    fn settings_come_from_defaults_then_the_file_then_the_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "warden.toml",
                "bind = \"127.0.0.1:9001\"\nplugin_max_timers = 11\nplugin_memory_mb = 33\nnode_id = \"from-file\"",
            )?;
            jail.set_env("WARDEN_BIND", "127.0.0.1:9002");
            jail.set_env("WARDEN_PLUGIN_MAX_TIMERS", "12");
            jail.set_env("WARDEN_NODE_ID", "from-env");
            jail.set_env("WARDEN_ADMIN_TOKEN", "secret");
            let args = ServeArgs {
                bind: Some("127.0.0.1:9003".into()),
                node_id: Some("from-flag".into()),
                ..ServeArgs::default()
            };
            let settings = Settings::load(&args).map_err(|error| error.to_string())?;
            assert_eq!(settings.bind, "127.0.0.1:9003", "a flag beats everything");
            assert_eq!(settings.node_id.as_deref(), Some("from-flag"));
            assert_eq!(
                settings.plugin_max_timers, 12,
                "the environment beats the file"
            );
            assert_eq!(settings.plugin_memory_mb, 33, "the file beats the defaults");
            assert_eq!(
                settings.plugin_call_timeout_ms,
                Settings::default().plugin_call_timeout_ms,
                "what nobody set is the default"
            );
            assert_eq!(settings.admin_token.as_deref(), Some("secret"));
            Ok(())
        });
    }

    #[test]
    fn the_public_listener_defaults_to_8081_and_can_be_turned_off() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WARDEN_ADMIN_TOKEN", "secret");
            let load = |args: &ServeArgs| Settings::load(args).map_err(|error| error.to_string());
            let defaults = load(&ServeArgs::default())?;
            assert_eq!(
                defaults.http_bind_address().unwrap(),
                Some("127.0.0.1:8081".parse().unwrap())
            );
            assert_eq!(defaults.http_max_body_bytes, 1_048_576);
            jail.set_env("WARDEN_HTTP_BIND", "off");
            jail.set_env("WARDEN_HTTP_MAX_BODY_BYTES", "10");
            let off = load(&ServeArgs::default())?;
            assert_eq!(off.http_bind_address().unwrap(), None);
            assert_eq!(off.http_max_body_bytes, 10);
            let flagged = ServeArgs {
                http_bind: Some("127.0.0.1:9100".into()),
                ..ServeArgs::default()
            };
            assert_eq!(
                load(&flagged)?.http_bind,
                "127.0.0.1:9100",
                "the flag beats the environment"
            );
            jail.set_env("WARDEN_HTTP_BIND", "nowhere");
            let error = load(&ServeArgs::default()).expect_err("refused");
            assert!(error.contains("WARDEN_HTTP_BIND"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_malformed_node_id_refuses_to_start() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WARDEN_ADMIN_TOKEN", "secret");
            for node_id in ["", "has space", "semi;colon", &"n".repeat(129)] {
                let args = ServeArgs {
                    node_id: Some(node_id.to_owned()),
                    ..ServeArgs::default()
                };
                let error = Settings::load(&args).expect_err("refused").to_string();
                assert!(error.contains("invalid node id"), "{node_id:?}: {error}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_cluster_needs_a_valid_name_the_database_and_kafka() {
        figment::Jail::expect_with(|jail| {
            // The shell may have the local stack's settings exported (infra/local.env).
            jail.clear_env();
            jail.set_env("WARDEN_ADMIN_TOKEN", "secret");
            let load = |args: &ServeArgs| Settings::load(args).map_err(|error| error.to_string());
            assert_eq!(
                load(&ServeArgs::default())?.cluster,
                None,
                "a single node by default"
            );
            assert_eq!(load(&ServeArgs::default())?.node_timeout_s, 10);
            let flagged = ServeArgs {
                cluster: Some("shop".into()),
                ..ServeArgs::default()
            };
            let error = load(&flagged).expect_err("no database");
            assert!(error.contains("WARDEN_DATABASE_URL"), "{error}");
            jail.set_env("WARDEN_DATABASE_URL", "postgres://warden@127.0.0.1/warden");
            let error = load(&flagged).expect_err("no Kafka");
            assert!(error.contains("WARDEN_KAFKA_BROKERS"), "{error}");
            jail.set_env("WARDEN_KAFKA_BROKERS", "127.0.0.1:9092");
            assert_eq!(load(&flagged)?.cluster.as_deref(), Some("shop"));
            jail.set_env("WARDEN_CLUSTER", "from-env");
            assert_eq!(
                load(&flagged)?.cluster.as_deref(),
                Some("shop"),
                "the flag wins"
            );
            assert_eq!(
                load(&ServeArgs::default())?.cluster.as_deref(),
                Some("from-env")
            );
            for name in ["Shop", "has space", "", "a__b", "end-"] {
                let args = ServeArgs {
                    cluster: Some(name.into()),
                    ..ServeArgs::default()
                };
                let error = load(&args).expect_err("refused");
                assert!(error.contains("invalid cluster name"), "{name:?}: {error}");
            }
            jail.set_env("WARDEN_NODE_TIMEOUT_S", "0");
            let error = load(&ServeArgs::default()).expect_err("refused");
            assert!(error.contains("WARDEN_NODE_TIMEOUT_S"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_default_node_id_is_the_host_and_a_digest_of_the_plugins_directory() {
        let first = default_node_id("web-1", std::path::Path::new("/srv/warden/plugins"));
        let again = default_node_id("web-1", std::path::Path::new("/srv/warden/plugins"));
        let other = default_node_id("web-1", std::path::Path::new("/srv/other/plugins"));
        assert_eq!(first, again, "stable across restarts");
        assert_ne!(first, other, "two deployments on one machine differ");
        let (host, digest) = first.rsplit_once('-').expect("host-digest");
        assert_eq!(host, "web-1");
        assert_eq!(digest.len(), 8);
        assert!(digest
            .chars()
            .all(|character| character.is_ascii_hexdigit()));
        check_node_id(&first).expect("a default id is a valid id");
        check_node_id(&default_node_id(&host_name(), std::path::Path::new("/"))).expect("valid");
    }

    #[test]
    fn the_defaults_are_the_plugin_limits_defaults() {
        assert_eq!(Settings::default().plugin_limits(), PluginLimits::default());
    }

    #[test]
    fn host_limit_settings_flow_into_the_plugin_limits() {
        // `WARDEN_PLUGIN_MAX_TIMERS` and the others reach figment as these lowercase keys.
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(
                "plugin_max_message_bytes = 2048\nplugin_log_bytes_per_s = 512\nplugin_max_timers = 7",
            ))
            .extract()
            .unwrap();
        let limits = settings.plugin_limits();
        assert_eq!(
            (
                limits.max_message_bytes,
                limits.log_bytes_per_second,
                limits.max_timers
            ),
            (2048, 512, 7)
        );
        assert_eq!(
            limits.memory_limit_mb,
            PluginLimits::default().memory_limit_mb
        );
    }
}
