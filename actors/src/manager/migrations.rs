//! The manager's side of migrations: applying them in a load, listing a plugin's, and the plan
//! (a rehearsal that changes nothing) of a file's.

use actix::{Actor, Handler, Message, ResponseFuture, WrapFuture as _};
use warden_runtime::resources::ResourceGrants;
use warden_runtime::PluginDescription;

use super::changes::{flatten, Core};
use super::PluginManager;
use crate::gateways::database::{
    ApplyMigrations, CloseDatabaseGateway, DatabaseGateway, ReadMigrationRecords,
};
use crate::gateways::{PluginGateways, PrepareDatabase};
use crate::plugin_actor::TerminatePlugin;
use crate::{Error, Result};

/// A migration's state as `GET /plugins/{name}/migrations` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// Listed and recorded.
    Applied,
    /// Listed, not recorded.
    Pending,
    /// Recorded, no longer listed (an older version was loaded again); never undone.
    Unknown,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Unknown => "unknown",
        }
    }
}

/// One migration of a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub id: String,
    pub checksum: String,
    pub state: MigrationState,
    /// RFC 3339, when recorded.
    pub applied_at: Option<String>,
}

/// A loaded plugin's migrations: listed order, then the unknown ones, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<MigrationStatus>>")]
pub struct ListMigrations {
    pub name: String,
}

/// Rehearses a file's pending migrations in a transaction that is rolled back.
#[derive(Message)]
#[rtype(result = "Result<MigrationPlan>")]
pub struct PlanMigrations {
    /// Relative to the plugins directory.
    pub path: String,
}

/// What loading a file would do to its plugin's schema.
#[derive(Debug)]
pub struct MigrationPlan {
    pub plugin: String,
    pub pending: Vec<String>,
    pub unknown: Vec<String>,
    /// `migration_changed` or `migration_failed`; `None` when the pending ones would apply.
    pub error: Option<warden_runtime::Error>,
}

impl Core {
    /// Applies the pending migrations of a prepared instance on its database gateway, before
    /// its `initialize`. A changed, refused or failing migration refuses the load.
    pub(super) async fn apply_migrations(
        &self,
        description: &PluginDescription,
        gateways: &PluginGateways,
    ) -> Result<()> {
        if description.migrations.is_empty() {
            return Ok(());
        }
        let Some(database) = &gateways.database else {
            return Err(no_database(&description.manifest.name));
        };
        let report = flatten(
            database
                .send(ApplyMigrations {
                    migrations: description.migrations.clone(),
                    plugin_version: description.manifest.version.to_string(),
                    rehearsal: false,
                })
                .await,
        )?;
        match report.error {
            Some(error) => Err(Error::Plugin(error)),
            None => Ok(()),
        }
    }

    async fn plan_migrations(&self, path: String) -> Result<MigrationPlan> {
        let prepared = self.prepare(&super::PluginSource::File(path)).await?;
        let outcome = self
            .rehearse(&prepared.description, &prepared.arbiter)
            .await;
        prepared.actor.do_send(TerminatePlugin);
        outcome
    }

    async fn rehearse(
        &self,
        description: &PluginDescription,
        arbiter: &actix::ArbiterHandle,
    ) -> Result<MigrationPlan> {
        let manifest = &description.manifest;
        let name = manifest.name.clone();
        let (grants, backend) = {
            let registry = self.registry.borrow();
            if !registry.plugins.contains_key(&name) {
                registry.check_name_prefix(&name)?;
            }
            let grants = ResourceGrants::of_manifest(manifest, registry.overrides.get(&name))?;
            (grants, registry.config.backends.database.clone())
        };
        let mut plan = MigrationPlan {
            plugin: name.clone(),
            pending: Vec::new(),
            unknown: Vec::new(),
            error: None,
        };
        let Some(backend) = backend else {
            if description.migrations.is_empty() {
                return Ok(plan);
            }
            return Err(no_database(&name));
        };
        let gateway = {
            let name = name.clone();
            DatabaseGateway::start_in_arbiter(arbiter, move |_| {
                DatabaseGateway::for_rehearsal(name, grants, backend)
            })
        };
        let rehearsed = async {
            flatten(gateway.send(PrepareDatabase).await)?;
            flatten(
                gateway
                    .send(ApplyMigrations {
                        migrations: description.migrations.clone(),
                        plugin_version: manifest.version.to_string(),
                        rehearsal: true,
                    })
                    .await,
            )
        };
        let report = rehearsed.await;
        gateway.do_send(CloseDatabaseGateway);
        let report = report?;
        plan.pending = report.pending;
        plan.unknown = report.unknown;
        plan.error = report.error;
        Ok(plan)
    }
}

pub(super) fn no_database(plugin: &str) -> Error {
    Error::Plugin(warden_runtime::Error::invalid_format(format!(
        "plugin '{plugin}' has migrations, which need a database: configure WARDEN_DATABASE_URL or remove 'migrations'"
    )))
}

/// Listed against recorded, in the order `GET /plugins/{name}/migrations` reports them.
fn statuses(
    description: &PluginDescription,
    records: Vec<crate::gateways::database::MigrationRecord>,
) -> Vec<MigrationStatus> {
    let mut statuses: Vec<MigrationStatus> = description
        .migrations
        .iter()
        .map(|migration| {
            let record = records.iter().find(|record| record.id == migration.id);
            MigrationStatus {
                id: migration.id.clone(),
                checksum: migration.checksum.clone(),
                state: if record.is_some() {
                    MigrationState::Applied
                } else {
                    MigrationState::Pending
                },
                applied_at: record.map(|record| record.applied_at.clone()),
            }
        })
        .collect();
    for record in records {
        if !description
            .migrations
            .iter()
            .any(|migration| migration.id == record.id)
        {
            statuses.push(MigrationStatus {
                id: record.id,
                checksum: record.checksum,
                state: MigrationState::Unknown,
                applied_at: Some(record.applied_at),
            });
        }
    }
    statuses
}

impl Handler<ListMigrations> for PluginManager {
    type Result = ResponseFuture<Result<Vec<MigrationStatus>>>;

    fn handle(&mut self, message: ListMigrations, _: &mut Self::Context) -> Self::Result {
        let found = {
            let registry = self.registry.borrow();
            registry
                .plugins
                .get(&message.name)
                .map(|plugin| (plugin.description.clone(), plugin.gateways.database.clone()))
        };
        Box::pin(async move {
            let (description, database) =
                found.ok_or(Error::PluginNotFound { name: message.name })?;
            let records = match database {
                Some(database) => flatten(database.send(ReadMigrationRecords).await)?,
                None => Vec::new(),
            };
            Ok(statuses(&description, records))
        })
    }
}

impl Handler<PlanMigrations> for PluginManager {
    type Result = actix::AtomicResponse<Self, Result<MigrationPlan>>;

    fn handle(&mut self, message: PlanMigrations, _: &mut Self::Context) -> Self::Result {
        // A change like any other: it holds the mailbox, so it sees no half-made registry.
        let core = self.core();
        actix::AtomicResponse::new(Box::pin(
            async move { core.plan_migrations(message.path).await }.into_actor(self),
        ))
    }
}

#[cfg(test)]
mod tests {
    use warden_runtime::manifest::PluginManifest;
    use warden_runtime::migrations::Migration;

    use super::*;
    use crate::gateways::database::MigrationRecord;

    fn description(ids: &[&str]) -> PluginDescription {
        PluginDescription {
            manifest: PluginManifest::from_json(
                &serde_json::json!({"name": "shop", "version": "1.0.0"}),
            )
            .unwrap(),
            exports: Vec::new(),
            executable: false,
            has_cleanup: false,
            routes: Default::default(),
            migrations: ids
                .iter()
                .map(|id| Migration {
                    id: (*id).to_owned(),
                    sql: format!("CREATE TABLE t{id} (id INT)"),
                    checksum: format!("sum-{id}"),
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn record(id: &str, at: &str) -> MigrationRecord {
        MigrationRecord {
            id: id.to_owned(),
            checksum: format!("recorded-{id}"),
            applied_at: at.to_owned(),
        }
    }

    #[test]
    fn listed_come_first_in_order_then_unknown_oldest_first() {
        let listed = description(&["001", "002"]);
        let statuses = statuses(
            &listed,
            vec![
                record("000", "2026-01-01T00:00:00Z"),
                record("001", "2026-01-02T00:00:00Z"),
                record("zzz", "2026-01-03T00:00:00Z"),
            ],
        );
        let summary: Vec<(&str, &str, Option<&str>)> = statuses
            .iter()
            .map(|status| {
                (
                    status.id.as_str(),
                    status.state.as_str(),
                    status.applied_at.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("001", "applied", Some("2026-01-02T00:00:00Z")),
                ("002", "pending", None),
                ("000", "unknown", Some("2026-01-01T00:00:00Z")),
                ("zzz", "unknown", Some("2026-01-03T00:00:00Z")),
            ]
        );
        assert_eq!(statuses[0].checksum, "sum-001");
        assert_eq!(statuses[2].checksum, "recorded-000");
    }
}
