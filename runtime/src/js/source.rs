//! Reading plugin modules: TypeScript stripping and imports confined to the plugin's directory.

use std::path::{Component, Path, PathBuf};

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::syntax::module_record::ExportExportName;
use oxc::transformer::{TransformOptions, Transformer};
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module};

use super::bundle::ModuleFiles;
use crate::{Error, Result};

/// File extensions Warden loads as plugin modules.
pub const MODULE_EXTENSIONS: [&str; 4] = ["js", "mjs", "ts", "mts"];

/// Whether a path names a file Warden would load as a plugin module.
/// Declaration files (`.d.ts`, `.d.mts`) hold types only and are never modules.
pub fn is_module_path(path: &Path) -> bool {
    let is_declaration = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".d.ts") || name.ends_with(".d.mts"));
    !is_declaration
        && path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| MODULE_EXTENSIONS.contains(&extension))
}

/// Returns JavaScript for a module's text: TypeScript files have their types stripped (no type
/// checking), JavaScript files are returned as they are.
pub fn to_javascript(file_name: &str, text: String) -> Result<String> {
    let is_typescript = file_name.ends_with(".ts") || file_name.ends_with(".mts");
    if !is_typescript {
        return Ok(text);
    }
    let allocator = Allocator::default();
    let source_type = SourceType::ts().with_module(true);
    let parsed = Parser::new(&allocator, &text, source_type).parse();
    if let Some(diagnostic) = parsed.diagnostics.first() {
        return Err(Error::invalid_format(format!(
            "cannot parse '{file_name}': {diagnostic}"
        )));
    }
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new().build(&program);
    let scoping = semantic.semantic.into_scoping();
    let transformed = Transformer::new(
        &allocator,
        Path::new(file_name),
        &TransformOptions::default(),
    )
    .build_with_scoping(scoping, &mut program);
    if let Some(diagnostic) = transformed.diagnostics.first() {
        return Err(Error::invalid_format(format!(
            "cannot strip types from '{file_name}': {diagnostic}"
        )));
    }
    Ok(Codegen::new().build(&program).code)
}

/// Joins a relative import onto the importing module's name, refusing anything that would
/// leave the plugin's directory or name a package (there is no `node_modules` and no built-in).
pub fn resolve_import(base: &str, specifier: &str) -> Result<String> {
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        return Err(Error::invalid_format(format!(
            "import '{specifier}' is not allowed: plugins may only import files relative to their own directory"
        )));
    }
    let mut segments: Vec<String> = Path::new(base)
        .parent()
        .map(|parent| {
            parent
                .components()
                .filter_map(|component| match component {
                    Component::Normal(segment) => Some(segment.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for component in Path::new(specifier).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if segments.pop().is_none() {
                    return Err(Error::invalid_format(format!(
                        "import '{specifier}' from '{base}' leaves the plugin's directory"
                    )));
                }
            }
            Component::Normal(segment) => segments.push(segment.to_string_lossy().into_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::invalid_format(format!(
                    "import '{specifier}' must be relative"
                )))
            }
        }
    }
    Ok(segments.join("/"))
}

/// Whether a module file would be a plugin if Warden loaded it: it has a default export or an
/// export named `plugin` (what the loader adopts), or re-exports another module's names with
/// `export *`. The module's text is only parsed, never run. A file that cannot be read or parsed
/// counts as a plugin, so doubt refuses the import.
fn declares_a_plugin(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    let allocator = Allocator::default();
    let source_type = SourceType::from_path(path)
        .unwrap_or_else(|_| SourceType::mjs())
        .with_module(true);
    let parsed = Parser::new(&allocator, &text, source_type).parse();
    if parsed.panicked || !parsed.diagnostics.is_empty() {
        return true;
    }
    let record = &parsed.module_record;
    !record.star_export_entries.is_empty()
        || record
            .local_export_entries
            .iter()
            .chain(record.indirect_export_entries.iter())
            .any(|entry| match &entry.export_name {
                ExportExportName::Default(_) => true,
                // `export { default } from …` names its default like any other name.
                ExportExportName::Name(exported) => {
                    exported.name == "plugin" || exported.name == "default"
                }
                ExportExportName::Null => false,
            })
}

/// Finds the file an import names (`name`, relative to `root`, as [`resolve_import`] gave it)
/// and checks where it really is: after following symbolic links it must stay inside `root`,
/// and it must not be an entry file (a module file at the top of `root` that declares a plugin,
/// so Warden loads it as a plugin of its own), neither by its name nor by where a link leads.
/// So a plugin can neither read files outside the plugins directory through a link nor run
/// another plugin's code inside its own heap. Top-level files without a plugin object stay
/// importable, as shared code.
pub fn confine_import(root: &Path, name: &str) -> Result<PathBuf> {
    let refused = |why: &str| Error::invalid_format(format!("cannot import '{name}': {why}"));
    let is_entry_file = |path: &Path| {
        is_module_path(path) && path.parent() == Some(root) && declares_a_plugin(path)
    };
    let path = root.join(name);
    if !is_module_path(&path) {
        return Err(refused(
            "only .js, .mjs, .ts and .mts files can be imported",
        ));
    }
    if is_entry_file(&path) {
        return Err(refused(
            "it is another plugin's entry file (a file at the top of the plugins directory with a default or 'plugin' export)",
        ));
    }
    let resolved = path
        .canonicalize()
        .map_err(|error| refused(&error.to_string()))?;
    if !resolved.starts_with(root) {
        return Err(refused(
            "it leads outside the plugins directory once symbolic links are followed",
        ));
    }
    if is_entry_file(&resolved) {
        return Err(refused(
            "it is a symbolic link to another plugin's entry file (a file at the top of the plugins directory with a default or 'plugin' export)",
        ));
    }
    if !is_module_path(&resolved) {
        return Err(refused(
            "it is a symbolic link to a file that is not a .js, .mjs, .ts or .mts file",
        ));
    }
    // A pipe or a device named like a module would block the read, and the plugin's thread.
    if !resolved.is_file() {
        return Err(refused("it is not a regular file"));
    }
    Ok(resolved)
}

/// The engine's module resolver and loader: module names are paths relative to the plugins
/// directory, read from it (confined) or from the plugin's recorded source.
pub struct ConfinedModuleLoader {
    /// The plugins directory, canonical (nothing outside it can be imported), or the source.
    pub files: ModuleFiles,
}

impl Resolver for ConfinedModuleLoader {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        resolve_import(base, name)
            .map_err(|error| rquickjs::Exception::throw_reference(ctx, &error.to_string()))
    }
}

impl Loader for ConfinedModuleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let text = match &self.files {
            ModuleFiles::Directory(root) => {
                let path = confine_import(root, name).map_err(|error| {
                    rquickjs::Exception::throw_reference(ctx, &error.to_string())
                })?;
                std::fs::read_to_string(&path).map_err(|error| {
                    rquickjs::Exception::throw_reference(
                        ctx,
                        &format!("cannot import '{name}': {error}"),
                    )
                })?
            }
            ModuleFiles::Recorded(bundle) => match bundle.files.get(name) {
                Some(text) => text.clone(),
                None => {
                    return Err(rquickjs::Exception::throw_reference(
                        ctx,
                        &format!("cannot import '{name}': it is not part of the plugin's recorded source (only imports found when it was loaded are; name dynamic imports with a literal path)"),
                    ))
                }
            },
        };
        let code = to_javascript(name, text)
            .map_err(|error| rquickjs::Exception::throw_syntax(ctx, &error.to_string()))?;
        Module::declare(ctx.clone(), name, code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typescript_types_are_stripped() {
        let code = to_javascript(
            "a.ts",
            "interface A { x: number }\nconst f = (a: A): number => a.x;\nexport default { f };"
                .into(),
        )
        .unwrap();
        assert!(!code.contains("interface"));
        assert!(code.contains("const f = (a) => a.x"));
    }

    #[test]
    fn typescript_syntax_errors_are_invalid_format() {
        let error = to_javascript("a.ts", "const = ;".into()).unwrap_err();
        assert!(
            matches!(error, Error::InvalidPluginFormat { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn javascript_is_returned_unchanged() {
        assert_eq!(
            to_javascript("a.js", "let x: y".into()).unwrap(),
            "let x: y"
        );
    }

    #[test]
    fn declaration_files_are_not_modules() {
        assert!(is_module_path(Path::new("plugins/a.ts")));
        assert!(is_module_path(Path::new("a.mjs")));
        assert!(!is_module_path(Path::new("plugins/warden.d.ts")));
        assert!(!is_module_path(Path::new("a.d.mts")));
        assert!(!is_module_path(Path::new("a.json")));
    }

    #[test]
    fn imports_resolve_relative_to_the_importer() {
        assert_eq!(
            resolve_import("main.js", "./lib/util.js").unwrap(),
            "lib/util.js"
        );
        assert_eq!(
            resolve_import("lib/util.js", "../other.js").unwrap(),
            "other.js"
        );
        assert_eq!(resolve_import("lib/util.js", "./x.js").unwrap(), "lib/x.js");
    }

    #[test]
    fn imports_cannot_leave_the_directory_or_name_packages() {
        assert!(resolve_import("main.js", "../secret.js").is_err());
        assert!(resolve_import("lib/a.js", "../../secret.js").is_err());
        assert!(resolve_import("main.js", "fs").is_err());
        assert!(resolve_import("main.js", "node:fs").is_err());
        assert!(resolve_import("main.js", "/etc/passwd").is_err());
    }

    /// A plugins directory with one plugin's library, a sibling plugin and a secret outside.
    fn plugins_directory() -> (tempfile::TempDir, PathBuf) {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("plugins");
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/util.js"), "export const x = 1;").unwrap();
        std::fs::write(root.join("sibling.js"), "export default {};").unwrap();
        std::fs::write(outside.path().join("secret.js"), "export const key = 'k';").unwrap();
        let root = root.canonicalize().unwrap();
        (outside, root)
    }

    #[test]
    fn files_in_subdirectories_can_be_imported() {
        let (_outside, root) = plugins_directory();
        assert_eq!(
            confine_import(&root, "lib/util.js").unwrap(),
            root.join("lib/util.js")
        );
    }

    #[test]
    fn another_plugins_entry_file_cannot_be_imported() {
        let (_outside, root) = plugins_directory();
        let error = confine_import(&root, "sibling.js").unwrap_err();
        assert!(error.to_string().contains("entry file"), "{error}");
        assert!(matches!(error, Error::InvalidPluginFormat { .. }));
        for (file, code) in [
            ("named.js", "export const plugin = { metadata: {} };"),
            (
                "renamed.ts",
                "const p: object = {}; export { p as plugin };",
            ),
            ("reexported.js", "export { default } from './lib/util.js';"),
            ("starred.js", "export * from './lib/util.js';"),
            ("broken.js", "export default {"),
        ] {
            std::fs::write(root.join(file), code).unwrap();
            assert!(confine_import(&root, file).is_err(), "{file}");
        }
    }

    #[test]
    fn a_top_level_file_without_a_plugin_object_is_shared_code() {
        let (_outside, root) = plugins_directory();
        std::fs::write(
            root.join("lib.js"),
            "export function shout(text) { return text + '!'; } export const plugins = 1;",
        )
        .unwrap();
        assert_eq!(
            confine_import(&root, "lib.js").unwrap(),
            root.join("lib.js")
        );
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_out_of_the_directory_or_to_an_entry_file_are_refused() {
        let (outside, root) = plugins_directory();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link(Path::new("/etc/passwd"), "lib/passwd.js");
        link(&outside.path().join("secret.js"), "lib/secret.js");
        link(&root.join("sibling.js"), "lib/sibling.js");
        link(Path::new("../sibling.js"), "lib/relative.js");
        link(&root.join("lib/util.js"), "lib/again.js");
        link(outside.path(), "lib/out");
        for name in ["lib/passwd.js", "lib/secret.js", "lib/out/secret.js"] {
            let error = confine_import(&root, name).unwrap_err();
            assert!(
                error.to_string().contains("outside the plugins directory"),
                "{name}: {error}"
            );
        }
        for name in ["lib/sibling.js", "lib/relative.js"] {
            let error = confine_import(&root, name).unwrap_err();
            assert!(error.to_string().contains("entry file"), "{name}: {error}");
        }
        assert_eq!(
            confine_import(&root, "lib/again.js").unwrap(),
            root.join("lib/util.js"),
            "a link that stays inside, to a library file, is fine"
        );
    }
}
