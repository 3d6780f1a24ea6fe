//! The database settings beyond the URL, with their documented defaults.

use std::time::Duration;

/// Database settings beyond the URL (`ADMIN_API.md`, "Least privilege in the database").
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Warden's own pool, and the budget of all plugins' connections together.
    pub pool_size: usize,
    /// Run each plugin's SQL as its own login role (`WARDEN_DATABASE_ROLES`).
    pub roles: bool,
    /// Most connections one plugin holds at once (`WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN`).
    pub connections_per_plugin: usize,
    /// Most rows one query returns (`WARDEN_DATABASE_MAX_ROWS`).
    pub max_rows: usize,
    /// Most bytes one query returns (`WARDEN_DATABASE_MAX_RESULT_BYTES`).
    pub max_result_bytes: usize,
    /// The longest a statement may run: the plugin's call time limit.
    pub statement_timeout: Duration,
    /// The cluster this node is part of. Every node runs a plugin as the same role, so its
    /// password must be the same on every node and its connection limit cannot be one node's.
    pub cluster: Option<String>,
}

impl DatabaseSettings {
    /// The documented defaults for a pool of `pool_size` connections: roles on, a quarter of the
    /// pool per plugin (at least one), 100,000 rows, 64 MiB, and the default call limit of 5 s.
    pub fn with_pool_size(pool_size: usize) -> Self {
        DatabaseSettings {
            pool_size,
            roles: true,
            connections_per_plugin: (pool_size / 4).max(1),
            max_rows: 100_000,
            max_result_bytes: 64 * 1024 * 1024,
            statement_timeout: Duration::from_millis(5_000),
            cluster: None,
        }
    }

    /// `CONNECTION LIMIT` of a plugin role: a node's share and one connection for its reset;
    /// in a cluster none, since PostgreSQL counts the connections of every node, and each
    /// node's own pool bounds its share.
    pub(super) fn role_connection_limit(&self) -> String {
        match self.cluster {
            Some(_) => "-1".to_owned(),
            None => (self.connections_per_plugin + 1).to_string(),
        }
    }
}
