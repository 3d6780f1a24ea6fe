//! Reading plugin modules: TypeScript stripping and imports confined to the plugin's directory.

use std::path::{Component, Path, PathBuf};

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module};

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

/// The engine's module resolver and loader: module names are paths relative to `root`.
pub struct ConfinedModuleLoader {
    /// The directory holding the plugin's entry module; nothing outside it can be imported.
    pub root: PathBuf,
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
        let path = self.root.join(name);
        if !is_module_path(&path) {
            return Err(rquickjs::Exception::throw_reference(
                ctx,
                &format!(
                    "cannot import '{name}': only .js, .mjs, .ts and .mts files can be imported"
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|error| {
            rquickjs::Exception::throw_reference(ctx, &format!("cannot import '{name}': {error}"))
        })?;
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
}
