//! Plugin files: resolving an operator's path inside the plugins directory, reading a module,
//! and finding the files a scan loads.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use warden_runtime::js::{is_module_path, JsModule, JsPluginFactory, SourceBundle};
use warden_runtime::PluginFactory;

use super::changes::Core;
use super::messages::PluginSource;
use super::registry::Registry;
use crate::{Error, Result};

impl Registry {
    /// The plugins directory with its symbolic links resolved.
    pub(super) fn plugins_root(&self) -> Result<PathBuf> {
        self.config
            .plugins_dir
            .canonicalize()
            .map_err(|error| Error::InvalidRequest {
                reason: format!("the plugins directory cannot be read: {error}"),
            })
    }

    /// Resolves a path given by an operator to a file inside the plugins directory.
    pub(super) fn plugin_file(&self, relative: &str) -> Result<PathBuf> {
        let candidate = Path::new(relative);
        let escapes = candidate.is_absolute()
            || candidate
                .components()
                .any(|component| !matches!(component, Component::Normal(_) | Component::CurDir));
        if relative.is_empty() || escapes {
            return Err(Error::InvalidRequest {
                reason: format!("path '{relative}' must be relative to the plugins directory and stay inside it"),
            });
        }
        let path = self.config.plugins_dir.join(candidate);
        // Symbolic links may point outside: compare the resolved paths too.
        let resolved = path.canonicalize().map_err(|_| Error::FileNotFound {
            path: relative.to_string(),
        })?;
        let root = self.plugins_root()?;
        if !resolved.starts_with(&root) {
            return Err(Error::InvalidRequest {
                reason: format!("path '{relative}' leads outside the plugins directory"),
            });
        }
        if !resolved.is_file() {
            return Err(Error::FileNotFound {
                path: relative.to_string(),
            });
        }
        Ok(resolved)
    }
}

/// What a plugin source gives a load: the factory of its instances, the file it came from
/// (relative to the plugins directory), a name for its actor before it is described, and the
/// source to record in a cluster.
pub(super) struct SourceFactory {
    pub(super) factory: Arc<dyn PluginFactory>,
    pub(super) source: Option<String>,
    pub(super) hint: String,
    pub(super) bundle: Option<Arc<SourceBundle>>,
}

impl Core {
    pub(super) fn factory_for(&self, source: &PluginSource) -> Result<SourceFactory> {
        let registry = self.registry.borrow();
        let limits = registry.config.limits;
        let from_bundle = |bundle: Arc<SourceBundle>| -> Result<SourceFactory> {
            let module = JsModule::from_bundle(bundle.clone())?;
            Ok(SourceFactory {
                factory: Arc::new(JsPluginFactory { module, limits }),
                source: Some(bundle.entry.clone()),
                hint: bundle.entry.clone(),
                bundle: Some(bundle),
            })
        };
        match source {
            PluginSource::Native(factory) => Ok(SourceFactory {
                factory: factory.clone(),
                source: None,
                hint: "native".into(),
                bundle: None,
            }),
            PluginSource::Recorded(bundle) => from_bundle(bundle.clone()),
            PluginSource::File(relative) => {
                let path = registry.plugin_file(relative)?;
                // Imports are confined to the whole plugins directory (the entry may be a link
                // into a subdirectory), and entry files at its top are off limits to them.
                let root = registry.plugins_root()?;
                if registry.config.cluster.is_some() {
                    // In a cluster every node, this one included, runs the source as recorded.
                    let mut loaded = from_bundle(Arc::new(SourceBundle::read(&root, &path)?))?;
                    loaded.source = Some(normalize_relative(relative));
                    loaded.hint = relative.clone();
                    return Ok(loaded);
                }
                let module = JsModule::read_in(&root, &path)?;
                Ok(SourceFactory {
                    factory: Arc::new(JsPluginFactory { module, limits }),
                    source: Some(normalize_relative(relative)),
                    hint: relative.clone(),
                    bundle: None,
                })
            }
        }
    }

    /// Module files at the top of the plugins directory that no loaded plugin came from.
    pub(super) fn unloaded_files(&self) -> Result<Vec<String>> {
        let registry = self.registry.borrow();
        let loaded: BTreeSet<&str> = registry
            .plugins
            .values()
            .filter_map(|plugin| plugin.source.as_deref())
            .collect();
        let entries = std::fs::read_dir(&registry.config.plugins_dir).map_err(|error| {
            Error::InvalidRequest {
                reason: format!(
                    "the plugins directory '{}' cannot be read: {error}",
                    registry.config.plugins_dir.display()
                ),
            }
        })?;
        let mut files: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
            .map(|entry| entry.path())
            .filter(|path| is_module_path(path))
            .filter_map(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .filter(|name| !loaded.contains(name.as_str()))
            .collect();
        files.sort();
        Ok(files)
    }
}

fn normalize_relative(relative: &str) -> String {
    Path::new(relative)
        .components()
        .filter_map(|component| match component {
            Component::Normal(segment) => Some(segment.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}
