//! A plugin's migrations, applied by its database gateway: on one of the plugin's own
//! connections (so they run as its role, like every statement of it), in one transaction,
//! under a PostgreSQL advisory lock per plugin, and recorded in `warden.plugin_migrations`.
//!
//! - The lock makes concurrent loads of one plugin (two processes, two nodes) apply each
//!   migration once: the second waits, then finds them recorded.
//! - Each statement passes the SQL guard with the plugin's grants, exactly as
//!   `executeCommand`. A refusal or a failure rolls back the whole batch.
//! - The records are written by the plugin's role itself, inside the same transaction, so a
//!   migration and its record commit together. Row-level security lets each role see and add
//!   only its own plugin's rows; Warden's user owns the table and reads them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Handler, Message, ResponseFuture};
use chrono::{DateTime, SecondsFormat, Utc};
use warden_runtime::migrations::Migration;
use warden_runtime::sql_guard::split_statements;
use warden_runtime::{sha256_hex, Error, Result};

use super::roles::quote_identifier;
use super::transaction::HeldConnection;
use super::{
    check_dropped_indexes, checked_statement, clean_connection, database_error, DatabaseBackend,
    DatabaseGateway,
};

/// The shortest time a batch of migrations may take; a longer call time limit raises it. A
/// load waits for its migrations, and the manager makes no other change meanwhile, so they
/// are bounded; a migration that needs longer (an index on a very large table) is for an
/// operator to run by hand.
const MIGRATION_TIME_LIMIT: Duration = Duration::from_secs(60);

/// The records, made by Warden's user. Row-level security is on, with one policy for every
/// plugin role (which does not own the table): a role `{database}.{plugin}` sees and adds only
/// the rows of its plugin. Being the same for all plugins, it is made once, with the table, so
/// a plugin's first batch needs only grants, never a lock on the table that other plugins'
/// batches hold.
const CREATE_RECORDS: &str = "CREATE SCHEMA IF NOT EXISTS warden;
    CREATE TABLE IF NOT EXISTS warden.plugin_migrations (
        plugin text NOT NULL,
        id text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        plugin_version text NOT NULL,
        PRIMARY KEY (plugin, id)
    );
    ALTER TABLE warden.plugin_migrations ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS own_rows ON warden.plugin_migrations;
    CREATE POLICY own_rows ON warden.plugin_migrations
        USING (current_user = current_database() || '.' || plugin)
        WITH CHECK (current_user = current_database() || '.' || plugin)";

/// Whether the records table, its row-level security and its policy are in place (catalog
/// reads only: no lock on the table).
const RECORDS_READY: &str = "SELECT EXISTS (SELECT 1 FROM pg_class
        WHERE oid = to_regclass('warden.plugin_migrations') AND relrowsecurity)
    AND EXISTS (SELECT 1 FROM pg_policies
        WHERE schemaname = 'warden' AND tablename = 'plugin_migrations' AND policyname = 'own_rows')";

const SELECT_RECORDS: &str = "SELECT id, checksum, applied_at FROM warden.plugin_migrations \
     WHERE plugin = $1 ORDER BY applied_at, id";

const INSERT_RECORD: &str = "INSERT INTO warden.plugin_migrations \
     (plugin, id, checksum, plugin_version) VALUES ($1, $2, $3, $4)";

/// SQLSTATE `undefined_table`: no migration was ever recorded in this database.
const UNDEFINED_TABLE: &str = "42P01";

/// Applies (or, as a rehearsal, runs and rolls back) the plugin's pending migrations.
#[derive(Message)]
#[rtype(result = "Result<MigrationReport>")]
pub struct ApplyMigrations {
    /// The module's list, in order.
    pub migrations: Arc<[Migration]>,
    /// Recorded beside each applied migration.
    pub plugin_version: String,
    /// Roll back at the end whatever happened (`POST /plugins/migrations/plan`).
    pub rehearsal: bool,
}

/// What a batch found and did. `error` is the migration that was changed, refused or failed;
/// with one, nothing of the batch stayed applied.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Listed migrations that were not recorded (applied now, unless rehearsed or failed).
    pub pending: Vec<String>,
    /// Recorded migrations the module no longer lists, oldest first.
    pub unknown: Vec<String>,
    pub error: Option<Error>,
}

/// The plugin's recorded migrations, read by Warden's user.
#[derive(Message)]
#[rtype(result = "Result<Vec<MigrationRecord>>")]
pub struct ReadMigrationRecords;

/// One applied migration as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    pub id: String,
    pub checksum: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
}

/// The advisory lock of one plugin's migrations, the same in every process.
fn migration_lock_key(plugin: &str) -> i64 {
    let digest = sha256_hex(format!("warden.plugin_migrations:{plugin}").as_bytes());
    // The first 16 hex digits are 64 bits of the digest.
    u64::from_str_radix(&digest[..16], 16).map_or(0, |bits| bits as i64)
}

impl Handler<ApplyMigrations> for DatabaseGateway {
    type Result = ResponseFuture<Result<MigrationReport>>;

    fn handle(&mut self, message: ApplyMigrations, _: &mut Self::Context) -> Self::Result {
        let opener = self.connection_opener();
        Box::pin(async move {
            let connections = opener.open().await?;
            opener
                .access
                .prepare_migration_records(&opener.plugin, connections.role.as_deref())
                .await?;
            let limit = opener
                .access
                .settings()
                .statement_timeout
                .max(MIGRATION_TIME_LIMIT);
            let deadline = tokio::time::Instant::now() + limit;
            let held = HeldConnection::new(clean_connection(&connections.pool, deadline).await?);
            let batch = Batch {
                plugin: &opener.plugin,
                grants: &opener.grants,
                migrations: &message.migrations,
                plugin_version: &message.plugin_version,
                limit,
                current: std::cell::RefCell::new("(lock)".to_owned()),
            };
            let cancel = held.cancel_token();
            let mut report = match tokio::time::timeout_at(deadline, batch.run(&held)).await {
                Ok(outcome) => outcome?,
                Err(_) => {
                    if let Some(cancel) = cancel {
                        let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
                    }
                    // Dropping the held connection closes it: PostgreSQL rolls the batch back.
                    return Ok(MigrationReport {
                        error: Some(Error::MigrationFailed {
                            plugin: opener.plugin.to_string(),
                            id: batch.current.borrow().clone(),
                            message: format!(
                                "the migrations ran past their time limit of {} s",
                                limit.as_secs()
                            ),
                            sqlstate: Some("57014".into()),
                        }),
                        ..MigrationReport::default()
                    });
                }
            };
            let commit = report.error.is_none() && !message.rehearsal;
            if let Err(error) = held.finish(commit).await {
                if commit {
                    report.error = Some(batch_error(&opener.plugin, "(commit)", error));
                }
            }
            if commit && !report.pending.is_empty() {
                connections.pool.manager().clear_statement_caches();
                tracing::info!(plugin = %opener.plugin, applied = ?report.pending, "migrations applied");
            }
            Ok(report)
        })
    }
}

/// One batch of migrations on one held connection.
struct Batch<'a> {
    plugin: &'a str,
    grants: &'a warden_runtime::resources::ResourceGrants,
    migrations: &'a [Migration],
    plugin_version: &'a str,
    limit: Duration,
    /// The migration running now, for the error of a batch that ran out of time.
    current: std::cell::RefCell<String>,
}

impl Batch<'_> {
    /// Opens the transaction, takes the lock, compares the records and runs what is pending.
    /// Connection failures are `Err`; a changed, refused or failing migration is the report's
    /// `error`.
    async fn run(&self, held: &HeldConnection) -> Result<MigrationReport> {
        let client = held.client()?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = {}",
                self.limit.as_millis()
            ))
            .await
            .map_err(database_error)?;
        client
            .execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&migration_lock_key(self.plugin)],
            )
            .await
            .map_err(database_error)?;
        let recorded: Vec<(String, String)> = client
            .query(SELECT_RECORDS, &[&self.plugin])
            .await
            .map_err(database_error)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut report = compare(self.plugin, self.migrations, &recorded);
        if report.error.is_some() {
            return Ok(report);
        }
        for migration in self
            .migrations
            .iter()
            .filter(|migration| report.pending.contains(&migration.id))
        {
            if let Err(error) = self.apply(client, migration).await {
                report.error = Some(error);
                break;
            }
        }
        Ok(report)
    }

    async fn apply(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        migration: &Migration,
    ) -> Result<()> {
        migration.id.clone_into(&mut self.current.borrow_mut());
        let failed = |error: Error| batch_error(self.plugin, &migration.id, error);
        let statements = split_statements(&migration.sql).map_err(failed)?;
        if statements.is_empty() {
            return Err(failed(Error::SqlNotAllowed {
                reason: "it holds no statement, only comments".into(),
            }));
        }
        for sql in statements {
            let checked = checked_statement(self.plugin, self.grants, sql).map_err(failed)?;
            checked.check_runs_in_transaction().map_err(failed)?;
            check_dropped_indexes(client, &checked, self.grants)
                .await
                .map_err(failed)?;
            // The extended protocol runs exactly one statement: the one the guard checked.
            client
                .execute(checked.sql.as_str(), &[])
                .await
                .map_err(|error| failed(database_error(error)))?;
        }
        client
            .execute(
                INSERT_RECORD,
                &[
                    &self.plugin,
                    &migration.id,
                    &migration.checksum,
                    &self.plugin_version,
                ],
            )
            .await
            .map_err(|error| failed(database_error(error)))?;
        Ok(())
    }
}

/// Listed against recorded: the pending ones in list order, the unknown ones, and the first
/// listed migration whose SQL changed since it was applied.
fn compare(
    plugin: &str,
    migrations: &[Migration],
    recorded: &[(String, String)],
) -> MigrationReport {
    let by_id: HashMap<&str, &str> = recorded
        .iter()
        .map(|(id, checksum)| (id.as_str(), checksum.as_str()))
        .collect();
    let mut report = MigrationReport::default();
    for migration in migrations {
        match by_id.get(migration.id.as_str()) {
            None => report.pending.push(migration.id.clone()),
            Some(checksum) if *checksum != migration.checksum && report.error.is_none() => {
                report.error = Some(Error::MigrationChanged {
                    plugin: plugin.to_owned(),
                    id: migration.id.clone(),
                    recorded: (*checksum).into(),
                    listed: migration.checksum.as_str().into(),
                });
            }
            Some(_) => {}
        }
    }
    report.unknown = recorded
        .iter()
        .filter(|(id, _)| !migrations.iter().any(|migration| migration.id == *id))
        .map(|(id, _)| id.clone())
        .collect();
    report
}

/// A refusal or failure of migration `id`, keeping PostgreSQL's SQLSTATE.
fn batch_error(plugin: &str, id: &str, error: Error) -> Error {
    let (message, sqlstate) = match error {
        Error::Database { sqlstate, message } => (message, Some(sqlstate.into_boxed_str())),
        other => (format!("{}: {other}", other.js_name()), None),
    };
    Error::MigrationFailed {
        plugin: plugin.to_owned(),
        id: id.to_owned(),
        message,
        sqlstate,
    }
}

impl Handler<ReadMigrationRecords> for DatabaseGateway {
    type Result = ResponseFuture<Result<Vec<MigrationRecord>>>;

    fn handle(&mut self, _: ReadMigrationRecords, _: &mut Self::Context) -> Self::Result {
        let backend = self.backend.clone();
        let plugin = Arc::clone(&self.plugin);
        Box::pin(async move { read_records(&backend, &plugin).await })
    }
}

async fn read_records(backend: &DatabaseBackend, plugin: &str) -> Result<Vec<MigrationRecord>> {
    let client = backend
        .pool()
        .get()
        .await
        .map_err(|error| Error::Database {
            sqlstate: super::CONNECTION_FAILURE.to_owned(),
            message: format!("cannot get a database connection: {error}"),
        })?;
    let rows = match client.query(SELECT_RECORDS, &[&plugin]).await {
        Ok(rows) => rows,
        Err(error) => {
            return match database_error(error) {
                Error::Database { sqlstate, .. } if sqlstate == UNDEFINED_TABLE => Ok(Vec::new()),
                other => Err(other),
            }
        }
    };
    Ok(rows
        .iter()
        .map(|row| MigrationRecord {
            id: row.get(0),
            checksum: row.get(1),
            applied_at: row
                .get::<_, DateTime<Utc>>(2)
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        })
        .collect())
}

/// The grants a plugin role needs on the records: read and add (its own rows, by the policy).
pub(super) fn records_grant_sql(role: &str) -> String {
    let role = quote_identifier(role);
    format!(
        "GRANT USAGE ON SCHEMA warden TO {role}; \
         GRANT SELECT, INSERT ON warden.plugin_migrations TO {role}"
    )
}

/// Makes the records table ready (once per database) and lets `role` use it (once per role),
/// on Warden's own connection inside its role-changes transaction. Nothing is altered that is
/// already in place.
pub(super) async fn prepare_records(
    admin: &deadpool_postgres::Transaction<'_>,
    role: Option<&str>,
) -> Result<()> {
    let ready: bool = admin
        .query_one(RECORDS_READY, &[])
        .await
        .map_err(database_error)?
        .get(0);
    if !ready {
        admin
            .batch_execute(CREATE_RECORDS)
            .await
            .map_err(database_error)?;
    }
    let Some(role) = role else {
        return Ok(());
    };
    let granted: bool = admin
        .query_one(
            "SELECT has_schema_privilege($1, 'warden', 'USAGE') \
             AND has_table_privilege($1, 'warden.plugin_migrations', 'SELECT, INSERT')",
            &[&role],
        )
        .await
        .map_err(database_error)?
        .get(0);
    if !granted {
        admin
            .batch_execute(&records_grant_sql(role))
            .await
            .map_err(database_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(id: &str, sql: &str) -> Migration {
        Migration {
            id: id.to_owned(),
            sql: sql.to_owned(),
            checksum: sha256_hex(sql.as_bytes()),
        }
    }

    #[test]
    fn pending_unknown_and_changed_are_told_apart() {
        let listed = [
            migration("001", "CREATE TABLE a (id INT)"),
            migration("002", "CREATE TABLE b (id INT)"),
            migration("003", "CREATE TABLE c (id INT)"),
        ];
        let recorded = vec![
            ("000_old".to_owned(), "x".to_owned()),
            ("001".to_owned(), listed[0].checksum.clone()),
        ];
        let report = compare("shop", &listed, &recorded);
        assert_eq!(report.pending, ["002", "003"]);
        assert_eq!(report.unknown, ["000_old"]);
        assert!(report.error.is_none());

        let recorded = vec![("002".to_owned(), "0".repeat(64))];
        let report = compare("shop", &listed, &recorded);
        assert_eq!(report.pending, ["001", "003"]);
        match report.error {
            Some(Error::MigrationChanged { id, recorded, .. }) => {
                assert_eq!(id, "002");
                assert_eq!(&*recorded, "0".repeat(64));
            }
            other => panic!("expected migration_changed, got {other:?}"),
        }
    }

    #[test]
    fn failures_keep_the_sqlstate_and_refusals_their_name() {
        let failed = batch_error(
            "shop",
            "002",
            Error::Database {
                sqlstate: "42P07".into(),
                message: "relation \"x\" already exists".into(),
            },
        );
        assert!(
            matches!(&failed, Error::MigrationFailed { sqlstate: Some(code), .. } if &**code == "42P07")
        );
        let text = failed.to_string();
        assert!(
            text.contains("'002'") && text.contains("42P07") && text.contains("already exists"),
            "{text}"
        );
        let refused = batch_error(
            "shop",
            "003",
            Error::SqlNotAllowed {
                reason: "statement kind".into(),
            },
        );
        assert!(
            refused.to_string().contains("SqlNotAllowedError"),
            "{refused}"
        );
    }

    #[test]
    fn the_lock_key_is_stable_and_per_plugin() {
        assert_eq!(migration_lock_key("shop"), migration_lock_key("shop"));
        assert_ne!(migration_lock_key("shop"), migration_lock_key("shop2"));
    }

    #[test]
    fn roles_get_grants_and_one_policy_keeps_each_to_its_rows() {
        let sql = records_grant_sql("warden_test.shop");
        assert!(
            sql.contains("ON warden.plugin_migrations TO \"warden_test.shop\""),
            "{sql}"
        );
        assert!(!sql.contains("POLICY"));
        assert!(CREATE_RECORDS.contains("current_user = current_database() || '.' || plugin"));
    }
}
