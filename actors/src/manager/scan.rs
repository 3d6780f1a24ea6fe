//! A scan of the plugins directory: every file's instance created at once (the engines start in
//! parallel on the plugin arbiters), the batch planned in dependency order, then admitted in
//! waves of plugins that do not depend on each other, each plugin all or nothing.

use warden_runtime::graph::{plan_batch_load, Candidate};

use super::changes::Core;
use super::messages::{PluginSource, ScanReport};
use super::registry::Prepared;
use crate::plugin_actor::TerminatePlugin;
use crate::{Error, Result};

impl Core {
    pub(super) async fn scan(&self) -> Result<ScanReport> {
        self.ensure_recordable().await?;
        let mut report = ScanReport::default();
        let files = match self.unloaded_files() {
            Ok(files) => files,
            Err(error) => {
                report.failed.push((String::new(), error));
                return Ok(report);
            }
        };
        let mut prepared: Vec<Option<Prepared>> = Vec::new();
        let mut candidates = Vec::new();
        let mut paths = Vec::new();
        // Every file's instance is created at once, so the engines start in parallel on all the
        // plugin arbiters; they are admitted below in waves, in dependency order.
        let sources: Vec<PluginSource> = files
            .iter()
            .map(|relative| PluginSource::File(relative.clone()))
            .collect();
        let instances =
            futures::future::join_all(sources.iter().map(|source| self.prepare(source))).await;
        for (relative, instance) in files.into_iter().zip(instances) {
            match instance {
                Ok(instance) if self.recorded_elsewhere(&instance.description.manifest.name) => {
                    let name = instance.description.manifest.name.clone();
                    instance.actor.do_send(TerminatePlugin);
                    report.failed.push((
                        relative,
                        Error::InvalidRequest {
                            reason: format!("the cluster records plugin '{name}' already; this node runs the recorded source (reload it to make this file the cluster's source)"),
                        },
                    ));
                }
                Ok(instance) => {
                    let manifest = &instance.description.manifest;
                    candidates.push(Candidate {
                        index: prepared.len(),
                        name: manifest.name.clone(),
                        version: manifest.version.clone(),
                        dependencies: manifest.dependencies.clone(),
                    });
                    prepared.push(Some(instance));
                    paths.push(relative);
                }
                Err(error) => report.failed.push((relative, error)),
            }
        }
        let (order, refused) = {
            let registry = self.registry.borrow();
            plan_batch_load(&registry.graph, &candidates)
        };
        for (index, error) in refused {
            if let Some(instance) = prepared[index].take() {
                instance.actor.do_send(TerminatePlugin);
            }
            report.failed.push((paths[index].clone(), error.into()));
        }
        for wave in waves(&order, &candidates) {
            self.admit_wave(wave, &mut prepared, &paths, &mut report)
                .await;
        }
        Ok(report)
    }

    /// Admits one wave of a scan: plugins none of which depends on another of the wave. Each is
    /// checked in order, against what is loaded and what the wave admitted before it, so names,
    /// prefixes and versions are checked as one load at a time would; then all of them start
    /// (resources, migrations, `initialize`) at once, on their own arbiters; then each commits
    /// in order, all or nothing.
    async fn admit_wave(
        &self,
        wave: Vec<usize>,
        prepared: &mut [Option<Prepared>],
        paths: &[String],
        report: &mut ScanReport,
    ) {
        let mut checked = Vec::new();
        for index in wave {
            let Some(instance) = prepared[index].take() else {
                continue;
            };
            match self.validate(&instance, &None, None) {
                Ok((grants, effective)) => {
                    self.registry
                        .borrow_mut()
                        .admitting
                        .insert(instance.description.manifest.name.clone());
                    checked.push((index, instance, grants, effective));
                }
                Err(error) => report.failed.push((paths[index].clone(), error)),
            }
        }
        let started = futures::future::join_all(
            checked
                .iter()
                .map(|(_, instance, grants, _)| self.start_instance(instance, grants)),
        )
        .await;
        self.registry.borrow_mut().admitting.clear();
        for ((index, instance, grants, effective), started) in checked.into_iter().zip(started) {
            let name = instance.description.manifest.name.clone();
            let committed = match started {
                Ok(gateways) => {
                    self.commit(instance, gateways, grants, effective, None)
                        .await
                }
                Err(error) => Err(error),
            };
            match committed {
                Ok(_) => report.loaded.push(name),
                Err(error) => report.failed.push((paths[index].clone(), error)),
            }
        }
    }

    /// Whether the cluster records plugin `name` while it does not run here (it failed here): a
    /// scan must not replace the recorded source by this node's own file.
    fn recorded_elsewhere(&self, name: &str) -> bool {
        let registry = self.registry.borrow();
        registry.cluster_recorded.contains(name) && !registry.plugins.contains_key(name)
    }
}

/// `order` (a batch's load order) cut into waves: a plugin goes one wave after the last of its
/// dependencies in the batch, so no plugin depends on another of its wave.
fn waves(order: &[usize], candidates: &[Candidate]) -> Vec<Vec<usize>> {
    let by_index: std::collections::HashMap<usize, &Candidate> = candidates
        .iter()
        .map(|candidate| (candidate.index, candidate))
        .collect();
    let mut wave_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for index in order {
        let Some(candidate) = by_index.get(index) else {
            continue;
        };
        let wave = candidate
            .dependencies
            .iter()
            .filter_map(|dependency| wave_of.get(dependency.name.as_str()))
            .map(|wave| wave + 1)
            .max()
            .unwrap_or(0);
        wave_of.insert(candidate.name.as_str(), wave);
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(*index);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_runtime::manifest::DependencySpec;

    fn candidate(index: usize, name: &str, dependencies: &[&str]) -> Candidate {
        Candidate {
            index,
            name: name.to_owned(),
            version: semver::Version::new(1, 0, 0),
            dependencies: dependencies
                .iter()
                .map(|name| DependencySpec {
                    name: (*name).to_owned(),
                    version: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_plugin_waits_one_wave_after_its_last_dependency_in_the_batch() {
        let candidates = [
            candidate(0, "users", &[]),
            candidate(1, "orders", &["users"]),
            candidate(2, "audit", &[]),
            candidate(3, "billing", &["orders", "audit"]),
            // Loaded already, or refused: not in the batch, so no wait.
            candidate(4, "reports", &["elsewhere"]),
        ];
        let order = [0, 2, 4, 1, 3];
        assert_eq!(
            waves(&order, &candidates),
            vec![vec![0, 2, 4], vec![1], vec![3]]
        );
        assert!(waves(&[], &candidates).is_empty());
    }
}
