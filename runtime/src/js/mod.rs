//! The JavaScript engine host: turns a plugin module file into a [`crate::plugin::Plugin`].
//!
//! Each instance gets its own QuickJS runtime (own heap, heap limit, CPU deadline per entry).
//! The module sees no `require`, no Node built-ins, no network and no files: only the `context`
//! given to `initialize`, `console`, and timers.

mod engine;
mod host;
mod plugin;
mod source;

use std::path::{Path, PathBuf};

pub use plugin::JsPlugin;
pub use source::{is_module_path, resolve_import, to_javascript, MODULE_EXTENSIONS};

use crate::plugin::{Plugin, PluginFactory, PluginLimits};
use crate::{Error, Result};

/// A plugin module read from disk and turned into JavaScript, ready to instantiate any number
/// of times (once per load and once per supervised restart).
#[derive(Debug, Clone)]
pub struct JsModule {
    /// The directory holding the entry file; imports cannot leave it.
    pub root: PathBuf,
    /// The entry file's name inside `root`.
    pub entry: String,
    /// The entry module's JavaScript (types already stripped).
    pub code: String,
}

impl JsModule {
    /// Reads `path` (a `.js`, `.mjs`, `.ts` or `.mts` file) and strips TypeScript types.
    pub fn read(path: &Path) -> Result<Self> {
        if !is_module_path(path) {
            return Err(Error::invalid_format(format!(
                "'{}' is not a .js, .mjs, .ts or .mts file",
                path.display()
            )));
        }
        let entry = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| Error::invalid_format(format!("'{}' names no file", path.display())))?;
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|error| {
            Error::invalid_format(format!("cannot read '{}': {error}", path.display()))
        })?;
        let code = to_javascript(&entry, text)?;
        Ok(JsModule { root, entry, code })
    }
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
            self.module.root.clone(),
            &self.module.entry,
            self.module.code.clone(),
            self.limits,
        )?;
        Ok(Box::new(plugin))
    }

    fn kind(&self) -> &'static str {
        "js"
    }
}
