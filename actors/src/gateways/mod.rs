//! Gateways: one actor per plugin and service, holding the plugin's grants and a shared client.
//!
//! A plugin never holds a client: its context's `database`, `kafka` and `s3` capabilities send
//! messages to its own gateway actors, which check the grants first. The shared clients
//! (`*Backend`) are made once at start from the settings and cloned into every gateway.

pub mod database;
pub mod garage_keys;
pub mod kafka;
pub mod storage;

use actix::Addr;

pub use database::{DatabaseBackend, DatabaseGateway, DatabaseSettings, PrepareDatabase};
pub use garage_keys::{GarageAdminConfig, GarageKeys};
pub use kafka::{KafkaBackend, KafkaGateway};
pub use storage::{StorageBackend, StorageConfig, StorageGateway};

/// The shared clients of every configured backing service (absent: not configured).
#[derive(Clone, Default)]
pub struct Backends {
    /// PostgreSQL, when `WARDEN_DATABASE_URL` is set.
    pub database: Option<DatabaseBackend>,
    /// Kafka, when `WARDEN_KAFKA_BROKERS` is set.
    pub kafka: Option<KafkaBackend>,
    /// S3, when `WARDEN_S3_ENDPOINT` is set.
    pub storage: Option<StorageBackend>,
}

/// One backend's readiness, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Configured and answering.
    Ok,
    /// Configured and not answering.
    Down,
    /// Not configured.
    Disabled,
}

impl Readiness {
    /// `ok`, `down` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ok => "ok",
            Readiness::Down => "down",
            Readiness::Disabled => "disabled",
        }
    }

    fn of(configured: bool, answering: bool) -> Self {
        match (configured, answering) {
            (false, _) => Readiness::Disabled,
            (true, true) => Readiness::Ok,
            (true, false) => Readiness::Down,
        }
    }
}

impl Backends {
    /// Checks each configured backend with a short, bounded probe.
    pub async fn readiness(&self) -> [(&'static str, Readiness); 3] {
        let database = match &self.database {
            Some(database) => Readiness::of(true, database.check().await),
            None => Readiness::Disabled,
        };
        let kafka = match &self.kafka {
            Some(kafka) => Readiness::of(true, kafka.check().await),
            None => Readiness::Disabled,
        };
        let storage = match &self.storage {
            Some(storage) => Readiness::of(true, storage.check().await),
            None => Readiness::Disabled,
        };
        [("database", database), ("kafka", kafka), ("s3", storage)]
    }
}

/// The gateway actors of one plugin instance's context.
#[derive(Clone, Default)]
pub struct PluginGateways {
    /// `context.database`.
    pub database: Option<Addr<DatabaseGateway>>,
    /// `context.kafka`.
    pub kafka: Option<Addr<KafkaGateway>>,
    /// `context.s3`.
    pub storage: Option<Addr<StorageGateway>>,
}

impl PluginGateways {
    /// Closes what the gateways hold open for a version that is gone: its database
    /// connections, which would otherwise count against its role's connection limit until they
    /// idled out.
    /// Closes the idle database connections of a version being replaced (it may come back if
    /// the replacement is refused).
    pub fn release_idle_connections(&self) {
        if let Some(database) = &self.database {
            database.do_send(database::ReleaseIdleConnections);
        }
    }

    pub fn close(&self) {
        if let Some(database) = &self.database {
            database.do_send(database::CloseDatabaseGateway);
        }
    }
}
