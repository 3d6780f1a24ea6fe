//! The JavaScript engine host: turns a plugin module file into a [`crate::plugin::Plugin`].
//!
//! Each instance gets its own QuickJS runtime (own heap, heap limit, CPU deadline per entry).
//! The module sees no `require`, no Node built-ins, no network and no files: only the `context`
//! given to `initialize`, `console`, and timers.

mod bundle;
mod engine;
mod host;
mod limits;
mod operations;
mod plugin;
mod source;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use bundle::{ModuleFiles, SourceBundle, MAX_SOURCE_BYTES, MAX_SOURCE_FILES};
pub use plugin::JsPlugin;
pub use source::{
    confine_import, is_module_path, resolve_import, to_javascript, MODULE_EXTENSIONS,
};

use crate::plugin::{Plugin, PluginFactory, PluginLimits};
use crate::{Error, Result};

/// A plugin module read from disk (or from a recorded source) and turned into JavaScript, ready
/// to instantiate any number of times (once per load and once per supervised restart).
#[derive(Debug, Clone)]
pub struct JsModule {
    /// Where its imports come from.
    pub files: ModuleFiles,
    /// The entry file's path inside the plugins directory (`/`-separated), also its module name.
    pub entry: String,
    /// The entry module's JavaScript (types already stripped).
    pub code: String,
    /// Lowercase hex SHA-256 of the entry file's bytes as read.
    pub sha256: String,
}

impl JsModule {
    /// Reads `path` (a `.js`, `.mjs`, `.ts` or `.mts` file) and strips TypeScript types; the
    /// file's directory is the plugins directory.
    pub fn read(path: &Path) -> Result<Self> {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::read_in(&root, path)
    }

    /// Reads `path`, which must lie inside the plugins directory `root` once symbolic links are
    /// followed, and strips TypeScript types. Imports are read from `root` when the module runs.
    pub fn read_in(root: &Path, path: &Path) -> Result<Self> {
        let (root, entry, resolved) = entry_name(root, path)?;
        let text = std::fs::read_to_string(&resolved).map_err(|error| {
            Error::invalid_format(format!("cannot read '{}': {error}", path.display()))
        })?;
        let sha256 = sha256_hex(text.as_bytes());
        let code = to_javascript(&entry, text)?;
        Ok(JsModule {
            files: ModuleFiles::Directory(root),
            entry,
            code,
            sha256,
        })
    }

    /// The module of a recorded source: its entry, with imports from the source alone.
    pub fn from_bundle(bundle: Arc<SourceBundle>) -> Result<Self> {
        let text = bundle.entry_text().to_owned();
        let sha256 = sha256_hex(text.as_bytes());
        let code = to_javascript(&bundle.entry, text)?;
        Ok(JsModule {
            entry: bundle.entry.clone(),
            files: ModuleFiles::Recorded(bundle),
            code,
            sha256,
        })
    }
}

/// The canonical plugins directory, the entry's module name inside it, and the entry's
/// resolved path; refuses a path that is no module or leads outside `root`.
fn entry_name(root: &Path, path: &Path) -> Result<(PathBuf, String, PathBuf)> {
    if !is_module_path(path) {
        return Err(Error::invalid_format(format!(
            "'{}' is not a .js, .mjs, .ts or .mts file",
            path.display()
        )));
    }
    let unreadable = |path: &Path, error: std::io::Error| {
        Error::invalid_format(format!("cannot read '{}': {error}", path.display()))
    };
    let root = root
        .canonicalize()
        .map_err(|error| unreadable(root, error))?;
    let resolved = path
        .canonicalize()
        .map_err(|error| unreadable(path, error))?;
    let entry = resolved
        .strip_prefix(&root)
        .ok()
        .filter(|entry| is_module_path(entry))
        .map(|entry| {
            entry
                .components()
                .map(|component| component.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .ok_or_else(|| {
            Error::invalid_format(format!(
                "'{}' leads outside the plugins directory once symbolic links are followed, or to a file that is not a module",
                path.display()
            ))
        })?;
    Ok((root, entry, resolved))
}

/// Creates [`JsPlugin`] instances of one module with one set of limits.
#[derive(Debug, Clone)]
pub struct JsPluginFactory {
    /// The module every instance evaluates.
    pub module: JsModule,
    /// Heap and time limits of every instance.
    pub limits: PluginLimits,
}

impl PluginFactory for JsPluginFactory {
    fn create(&self) -> Result<Box<dyn Plugin>> {
        let plugin = JsPlugin::load(
            self.module.files.clone(),
            &self.module.entry,
            self.module.code.clone(),
            self.limits,
        )?;
        Ok(Box::new(plugin))
    }

    fn kind(&self) -> &'static str {
        "js"
    }

    fn source_sha256(&self) -> Option<String> {
        Some(self.module.sha256.clone())
    }
}

/// Lowercase hex SHA-256 of `bytes`, as `PluginInfo.sha256` and node ids write digests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}
