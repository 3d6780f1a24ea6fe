//! The second wall in PostgreSQL: a login role and a small pool per plugin, and grants on shared
//! tables mirroring the plugins' levels.
//!
//! The SQL guard is the first wall. Whatever slips past it still runs as the plugin's own role:
//! no superuser, no `CREATEROLE`/`CREATEDB`/`BYPASSRLS`, member of no role, owner of its own
//! tables only. So it cannot read or change other plugins' tables, sequences or large objects,
//! read server files or settings, or signal other backends. Each connection's session user is
//! that role (not a `SET ROLE` away from Warden's user), so no function can switch back.
//!
//! The connections themselves, and the one budget they share, are in `connections.rs`.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use deadpool::managed::Pool as ManagedPool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::sync::{OnceCell, Semaphore};
use tokio_postgres::NoTls;
use warden_runtime::access::AccessLevel;
use warden_runtime::resources::{database_role_name, ResourceGrants, ResourceKind};
use warden_runtime::{Error, Result};

use super::connections::{PluginAccessShared, PluginConnectionManager, PluginConnectionPool};
use super::settings::DatabaseSettings;
use super::{database_error, CONNECTION_FAILURE};

/// Warden's side of plugin database access: opens role pools and keeps grants in step. Shared
/// behind one `Arc` by the backend and every gateway, so a statement clones no configuration.
pub struct PluginDatabaseAccess {
    /// Warden's own connections (never a plugin's statement).
    admin: deadpool_postgres::Pool,
    /// How Warden connects; plugin connections change the user, password and options.
    base: tokio_postgres::Config,
    settings: DatabaseSettings,
    shared: Arc<PluginAccessShared>,
    /// Whether roles are on, decided once from Warden's own privileges.
    roles_active: OnceCell<Option<RoleContext>>,
    /// The one pool all plugins share when roles are off (Warden's user, never Warden's own
    /// connections).
    shared_pool: OnceCell<PluginConnectionPool>,
    /// Each plugin role's password in this process.
    passwords: Mutex<HashMap<String, String>>,
    /// The `role/plugin` pairs whose migration records are prepared.
    migration_records: Mutex<HashSet<String>>,
}

/// What role management needs to know about the server, read once.
#[derive(Debug, Clone)]
struct RoleContext {
    database: String,
}

/// A plugin's connections: its pool and the role they log in as (`None` with roles off).
#[derive(Clone)]
pub(super) struct PluginPool {
    pub(super) pool: PluginConnectionPool,
    pub(super) role: Option<String>,
}

impl PluginDatabaseAccess {
    pub(super) fn new(
        admin: deadpool_postgres::Pool,
        base: tokio_postgres::Config,
        settings: DatabaseSettings,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(settings.pool_size.max(1)));
        PluginDatabaseAccess {
            admin,
            base,
            settings,
            shared: Arc::new(PluginAccessShared {
                budget,
                pools: Mutex::new(Vec::new()),
                shared_tables: Mutex::new(HashMap::new()),
            }),
            roles_active: OnceCell::new(),
            shared_pool: OnceCell::new(),
            passwords: Mutex::new(HashMap::new()),
            migration_records: Mutex::new(HashSet::new()),
        }
    }

    /// The role `plugin`'s statements run as, once roles are known to be on.
    pub(super) fn role_of(&self, plugin: &str) -> Option<String> {
        let context = self.roles_active.get()?.as_ref()?;
        database_role_name(&context.database, plugin).ok()
    }

    pub(super) fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    /// Opens (or reuses) the connections `plugin` runs its statements on. With roles on, this
    /// makes sure its role exists with a fresh password and no privilege beyond its grants,
    /// hands it its private tables and mirrors its levels on shared tables.
    ///
    /// A `rehearsal` (a migration plan) leaves table owners and the grants of shared tables as
    /// they are, so that planning a version that asks for more changes no privilege.
    pub(super) async fn prepare(
        &self,
        plugin: &str,
        grants: &ResourceGrants,
        rehearsal: bool,
    ) -> Result<PluginPool> {
        let Some(context) = self.role_context().await? else {
            let pool = self
                .shared_pool
                .get_or_try_init(|| async {
                    let config = self.plugin_config(None);
                    self.open_pool(config, self.settings.pool_size)
                })
                .await?
                .clone();
            return Ok(PluginPool { pool, role: None });
        };
        let role = database_role_name(&context.database, plugin)?;
        let password = self.password_of(&role)?;
        let mut client = self.admin_client().await?;
        let admin = locked_transaction(&mut client).await?;
        let role_sql = quote_identifier(&role);
        let attributes = format!(
            "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {} PASSWORD '{password}'",
            self.settings.role_connection_limit()
        );
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(database_error)?
            .is_some();
        if exists {
            // Only a superuser may name the superuser, replication and RLS-bypass attributes
            // in ALTER ROLE, so they are checked below instead of set.
            admin
                .batch_execute(&format!(
                    "ALTER ROLE {role_sql} WITH LOGIN NOINHERIT NOCREATEDB NOCREATEROLE \
                     CONNECTION LIMIT {} PASSWORD '{password}'",
                    self.settings.role_connection_limit()
                ))
                .await
                .map_err(|error| role_error(&role, "cannot set up", error))?;
        } else {
            admin
                .batch_execute(&format!("CREATE ROLE {role_sql} {attributes}"))
                .await
                .map_err(|error| role_error(&role, "cannot create", error))?;
        }
        let privileged: bool = admin
            .query_one(
                "SELECT rolsuper OR rolreplication OR rolbypassrls OR rolcreaterole OR rolcreatedb \
                 FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(database_error)?
            .get(0);
        if privileged {
            return Err(Error::Database {
                sqlstate: "42501".to_owned(),
                message: format!(
                    "the database role '{role}' has superuser, replication, BYPASSRLS, CREATEROLE \
                     or CREATEDB, which a plugin's role must not have; drop the role or remove \
                     those attributes"
                ),
            });
        }
        // A role that is a member of another role could reach that role's privileges.
        let memberships = admin
            .query(
                "SELECT granted.rolname FROM pg_auth_members membership \
                 JOIN pg_roles granted ON granted.oid = membership.roleid \
                 JOIN pg_roles member ON member.oid = membership.member \
                 WHERE member.rolname = $1",
                &[&role],
            )
            .await
            .map_err(database_error)?;
        for membership in memberships {
            let granted: String = membership.get(0);
            admin
                .batch_execute(&format!(
                    "REVOKE {} FROM {role_sql}",
                    quote_identifier(&granted)
                ))
                .await
                .map_err(|error| role_error(&role, "cannot revoke a membership of", error))?;
        }
        // Warden's user is a member of each plugin role, so that it can hand tables to it and
        // take shared tables over from it; the plugin role gains nothing from this.
        admin
            .batch_execute(&format!(
                "GRANT {role_sql} TO CURRENT_USER; \
                 GRANT CONNECT ON DATABASE {} TO {role_sql}; \
                 GRANT USAGE, CREATE ON SCHEMA public TO {role_sql}",
                quote_identifier(&context.database)
            ))
            .await
            .map_err(|error| role_error(&role, "cannot grant the database to", error))?;
        for grant in grants.grants(ResourceKind::Table) {
            // A rehearsal (a plan) hands over no table and grants nothing on shared ones.
            if rehearsal {
                continue;
            }
            if grant.shared {
                self.register_shared_table(&grant.physical, &role, grant.access);
                self.sync_shared_table(&admin, &grant.physical).await?;
            } else {
                give_table_to(&admin, &grant.physical, &role).await?;
            }
        }
        admin.commit().await.map_err(database_error)?;
        let config = self.plugin_config(Some((&role, &password)));
        let pool = self.open_pool(config, self.settings.connections_per_plugin)?;
        Ok(PluginPool {
            pool,
            role: Some(role),
        })
    }

    /// The password of `role` in this process: made once, then reused, so that a second pool of
    /// the same plugin (a reload that is refused and restores the previous version, a plan)
    /// never locks out the pool that is running.
    fn password_of(&self, role: &str) -> Result<String> {
        let mut passwords = self
            .passwords
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(password) = passwords.get(role) {
            return Ok(password.clone());
        }
        // In a cluster every node must set the same password, or each node's load would lock
        // the others out: it is derived from Warden's own password, which every node has and
        // no plugin sees. Without one (trust, peer or certificate authentication), passwords
        // do not decide who logs in, and a random one does no harm.
        let password = match (&self.settings.cluster, self.base.get_password()) {
            (Some(cluster), Some(secret)) => {
                let mut material =
                    Vec::with_capacity(secret.len() + cluster.len() + role.len() + 32);
                for part in [
                    b"warden plugin role password".as_slice(),
                    cluster.as_bytes(),
                    role.as_bytes(),
                    secret,
                ] {
                    material.extend_from_slice(&(part.len() as u64).to_be_bytes());
                    material.extend_from_slice(part);
                }
                warden_runtime::sha256_hex(&material)
            }
            _ => random_password()?,
        };
        passwords.insert(role.to_owned(), password.clone());
        Ok(password)
    }

    /// Makes the migration records ready for `plugin` (once per process): the table, and for
    /// its role the right to read and add its own rows.
    pub(super) async fn prepare_migration_records(
        &self,
        plugin: &str,
        role: Option<&str>,
    ) -> Result<()> {
        let key = role.unwrap_or("").to_owned() + "/" + plugin;
        if self
            .migration_records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let mut client = self.admin_client().await?;
        let admin = locked_transaction(&mut client).await?;
        super::migrations::prepare_records(&admin, role)
            .await
            .map_err(|error| match error {
                Error::Database { sqlstate, message } => Error::Database {
                    sqlstate,
                    message: format!(
                        "cannot prepare the migration records of '{plugin}': {message}"
                    ),
                },
                other => other,
            })?;
        admin.commit().await.map_err(database_error)?;
        self.migration_records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key);
        Ok(())
    }

    /// After a statement changed a shared table's shape (typically created it, then owned by
    /// the plugin's role), gives it back to Warden's user and grants every mapped plugin its
    /// level again.
    pub(super) async fn shared_table_changed(&self, physical: &str) -> Result<()> {
        if self.role_context().await?.is_none() {
            return Ok(());
        }
        let mut client = self.admin_client().await?;
        let admin = locked_transaction(&mut client).await?;
        self.sync_shared_table(&admin, physical).await?;
        admin.commit().await.map_err(database_error)
    }

    /// Lends the shared tables a schema change of `role` touches to that role for the one
    /// statement: PostgreSQL lets only an owner alter, index or drop a table, and the guard has
    /// checked that the plugin holds `owner` on each. [`Self::shared_table_changed`] takes them
    /// back after the statement, whatever its outcome.
    pub(super) async fn lend_shared_tables(&self, role: &str, tables: &[String]) -> Result<()> {
        let mut client = self.admin_client().await?;
        let admin = locked_transaction(&mut client).await?;
        for physical in tables {
            give_table_to(&admin, physical, role).await?;
        }
        admin.commit().await.map_err(database_error)
    }

    fn register_shared_table(&self, physical: &str, role: &str, level: AccessLevel) {
        let mut shared = self
            .shared
            .shared_tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shared
            .entry(physical.to_owned())
            .or_default()
            .insert(role.to_owned(), level);
    }

    async fn sync_shared_table(
        &self,
        admin: &deadpool_postgres::Transaction<'_>,
        physical: &str,
    ) -> Result<()> {
        let owner = admin
            .query_opt(
                "SELECT pg_get_userbyid(relowner) = current_user FROM pg_class \
                 WHERE relname = $1 AND relnamespace = 'public'::regnamespace \
                 AND relkind IN ('r', 'p')",
                &[&physical],
            )
            .await
            .map_err(database_error)?;
        let Some(owned_by_warden) = owner.map(|row| row.get::<_, bool>(0)) else {
            // Not created yet: the plugin with `owner` on it creates it, then this runs again.
            return Ok(());
        };
        let table = format!("public.{}", quote_identifier(physical));
        if !owned_by_warden {
            admin
                .batch_execute(&format!("ALTER TABLE {table} OWNER TO CURRENT_USER"))
                .await
                .map_err(|error| role_error(physical, "cannot take over shared table", error))?;
        }
        let sequences: Vec<String> = admin
            .query(
                "SELECT sequence.relname FROM pg_class sequence \
                 JOIN pg_depend dependency ON dependency.objid = sequence.oid \
                 JOIN pg_class owner ON owner.oid = dependency.refobjid \
                 WHERE sequence.relkind = 'S' AND owner.relname = $1 \
                 AND owner.relnamespace = 'public'::regnamespace \
                 AND dependency.deptype IN ('a', 'i')",
                &[&physical],
            )
            .await
            .map_err(database_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let roles = self
            .shared
            .shared_tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(physical)
            .cloned()
            .unwrap_or_default();
        let mut statements = String::new();
        for (role, level) in roles {
            let role = quote_identifier(&role);
            let (table_rights, sequence_rights) = match level {
                AccessLevel::Read => ("SELECT", "SELECT"),
                AccessLevel::Write => ("SELECT, INSERT, UPDATE, DELETE", "USAGE, SELECT"),
                _ => (
                    "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES",
                    "USAGE, SELECT, UPDATE",
                ),
            };
            statements.push_str(&format!(
                "REVOKE ALL ON TABLE {table} FROM {role}; \
                 GRANT {table_rights} ON TABLE {table} TO {role}; "
            ));
            for sequence in &sequences {
                let sequence = format!("public.{}", quote_identifier(sequence));
                statements.push_str(&format!(
                    "REVOKE ALL ON SEQUENCE {sequence} FROM {role}; \
                     GRANT {sequence_rights} ON SEQUENCE {sequence} TO {role}; "
                ));
            }
        }
        admin
            .batch_execute(&statements)
            .await
            .map_err(|error| role_error(physical, "cannot grant shared table", error))
    }

    /// Decides once whether roles are on: asked for, and Warden's user may create roles.
    async fn role_context(&self) -> Result<Option<RoleContext>> {
        self.roles_active
            .get_or_try_init(|| async {
                let mut client = self.admin_client().await?;
                let admin = locked_transaction(&mut client).await?;
                let row = admin
                    .query_one(
                        "SELECT rolsuper, rolcreaterole, current_database() FROM pg_roles \
                         WHERE rolname = current_user",
                        &[],
                    )
                    .await
                    .map_err(database_error)?;
                let (superuser, create_role, database): (bool, bool, String) =
                    (row.get(0), row.get(1), row.get(2));
                if !self.settings.roles {
                    tracing::warn!(
                        "WARDEN_DATABASE_ROLES is off: every plugin's SQL runs as Warden's own \
                         database user, guarded by the SQL guard alone"
                    );
                    return Ok(None);
                }
                if !create_role && !superuser {
                    tracing::warn!(
                        "Warden's database user has no CREATEROLE, so plugins cannot get roles of \
                         their own: running with WARDEN_DATABASE_ROLES off"
                    );
                    return Ok(None);
                }
                if superuser {
                    tracing::warn!(
                        "Warden's database user is a superuser; plugins still run as their own \
                         non-superuser roles, but run Warden as a non-superuser with CREATEROLE"
                    );
                }
                // PUBLIC may create temporary tables in a new database; a plugin may not.
                if let Err(error) = admin
                    .batch_execute(&format!(
                        "REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC",
                        quote_identifier(&database)
                    ))
                    .await
                {
                    tracing::warn!(%error, "cannot revoke TEMPORARY on the database from PUBLIC");
                    return Ok(Some(RoleContext { database }));
                }
                admin.commit().await.map_err(database_error)?;
                Ok(Some(RoleContext { database }))
            })
            .await
            .cloned()
    }

    async fn admin_client(&self) -> Result<deadpool_postgres::Client> {
        self.admin.get().await.map_err(|error| Error::Database {
            sqlstate: CONNECTION_FAILURE.to_owned(),
            message: format!("cannot get a database connection: {error}"),
        })
    }

    /// How a plugin connects: its own user and password (or Warden's with roles off), strings
    /// read as the guard read them, a statement time limit, and no session left idle inside a
    /// transaction.
    fn plugin_config(&self, login: Option<(&str, &str)>) -> tokio_postgres::Config {
        let mut config = self.base.clone();
        if let Some((user, password)) = login {
            config.user(user);
            config.password(password);
        }
        let timeout_ms = self.settings.statement_timeout.as_millis().max(1);
        config.options(format!(
            "-c standard_conforming_strings=on -c search_path=public \
             -c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
        ));
        config
    }

    fn open_pool(
        &self,
        config: tokio_postgres::Config,
        max_size: usize,
    ) -> Result<PluginConnectionPool> {
        let manager = PluginConnectionManager {
            connections: Manager::from_config(
                config,
                NoTls,
                ManagerConfig {
                    // Statements send the reset behind themselves (`SESSION_RESET`, see
                    // `SessionUse`); the checkout only checks that the connection is alive.
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
            access: Arc::clone(&self.shared),
            sweep_pending: AtomicBool::new(false),
        };
        let pool = ManagedPool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .map_err(|error| Error::Database {
                sqlstate: CONNECTION_FAILURE.to_owned(),
                message: format!("cannot build a plugin's database pool: {error}"),
            })?;
        self.shared
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(pool.weak());
        Ok(pool)
    }
}

/// Gives an existing table to `role`: a plugin's private table made before roles were on (or by
/// Warden's user), or a shared table lent for one schema change.
async fn give_table_to(
    admin: &deadpool_postgres::Transaction<'_>,
    physical: &str,
    role: &str,
) -> Result<()> {
    let owner = admin
        .query_opt(
            "SELECT pg_get_userbyid(relowner) FROM pg_class \
             WHERE relname = $1 AND relnamespace = 'public'::regnamespace \
             AND relkind IN ('r', 'p')",
            &[&physical],
        )
        .await
        .map_err(database_error)?;
    match owner.map(|row| row.get::<_, String>(0)) {
        Some(owner) if owner != role => admin
            .batch_execute(&format!(
                "ALTER TABLE public.{} OWNER TO {}",
                quote_identifier(physical),
                quote_identifier(role)
            ))
            .await
            .map_err(|error| role_error(physical, "cannot hand over table", error)),
        _ => Ok(()),
    }
}

/// The advisory lock that serializes role and grant changes of every Warden on the server:
/// PostgreSQL fails concurrent `GRANT`s on one object ("tuple concurrently updated").
const ROLE_CHANGES_LOCK: i64 = 0x5741_5244_454e_0001;

/// A transaction on Warden's own connection holding [`ROLE_CHANGES_LOCK`] until it ends.
async fn locked_transaction(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>> {
    let transaction = client.transaction().await.map_err(database_error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&ROLE_CHANGES_LOCK])
        .await
        .map_err(database_error)?;
    Ok(transaction)
}

/// A PostgreSQL identifier in double quotes, with inner quotes doubled.
pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// 32 random hexadecimal digits from the operating system: a password nobody stores.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut bytes))
        .map_err(|error| Error::Database {
            sqlstate: CONNECTION_FAILURE.to_owned(),
            message: format!("cannot make a password for a plugin role: {error}"),
        })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn role_error(what: &str, doing: &str, error: tokio_postgres::Error) -> Error {
    match database_error(error) {
        Error::Database { sqlstate, message } => Error::Database {
            sqlstate,
            message: format!("{doing} '{what}': {message}"),
        },
        other => other,
    }
}
