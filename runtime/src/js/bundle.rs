//! A plugin's source as a cluster records it: the entry file and every module it imports, read
//! once on the node that received the change, so every node runs the same text.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use oxc::allocator::Allocator;
use oxc::parser::Parser;
use oxc::span::SourceType;

use super::source::{confine_import, resolve_import};
use super::{entry_name, sha256_hex};
use crate::{Error, Result};

/// Most files one plugin's recorded source holds: it travels to every node through PostgreSQL.
pub const MAX_SOURCE_FILES: usize = 256;
/// Most bytes of text one plugin's recorded source holds, all files together.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024 * 1024;

/// The files of one plugin's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBundle {
    /// The entry file's module name: its path inside the plugins directory, `/`-separated.
    pub entry: String,
    /// Module name → the file's text as read (TypeScript not yet stripped), the entry included.
    pub files: BTreeMap<String, String>,
}

impl SourceBundle {
    /// Reads the entry file at `path` inside the plugins directory `root`, then every module it
    /// imports statically (`import … from`, `export … from`) or with a literal dynamic
    /// `import('…')`, with the confinement rules of the engine's loader. A static import that
    /// cannot be read refuses the read, as evaluating the module would; a dynamic one is left
    /// out (it fails when it runs, as it would from the directory).
    pub fn read(root: &Path, path: &Path) -> Result<Self> {
        let (root, entry, resolved) = entry_name(root, path)?;
        let mut budget = MAX_SOURCE_BYTES;
        let text = read_recordable(&resolved, &entry, &mut budget)?;
        let mut files = BTreeMap::new();
        let mut queue = VecDeque::from([(entry.clone(), text)]);
        while let Some((name, text)) = queue.pop_front() {
            for (specifier, required) in imports_of(&name, &text)? {
                let import = match resolve_import(&name, &specifier) {
                    Ok(import) => import,
                    Err(error) if required => return Err(error),
                    Err(_) => continue,
                };
                let known = import == entry
                    || files.contains_key(&import)
                    || queue.iter().any(|(queued, _)| *queued == import);
                if known {
                    continue;
                }
                if files.len() + queue.len() + 1 > MAX_SOURCE_FILES {
                    return Err(too_large());
                }
                let read = confine_import(&root, &import)
                    .and_then(|file| read_recordable(&file, &import, &mut budget));
                match read {
                    Ok(text) => queue.push_back((import, text)),
                    Err(error) if required => return Err(error),
                    Err(_) => {}
                }
            }
            files.insert(name, text);
        }
        Ok(SourceBundle { entry, files })
    }

    /// The entry file's text.
    pub fn entry_text(&self) -> &str {
        self.files.get(&self.entry).map_or("", String::as_str)
    }

    /// Lowercase hex SHA-256 of every file's name and text, in name order: equal digests mean
    /// the same source, imports included.
    pub fn digest(&self) -> String {
        let mut hashed = Vec::new();
        for (name, text) in &self.files {
            for part in [name.as_bytes(), text.as_bytes()] {
                hashed.extend_from_slice(&(part.len() as u64).to_be_bytes());
                hashed.extend_from_slice(part);
            }
        }
        sha256_hex(&hashed)
    }
}

fn too_large() -> Error {
    Error::invalid_format(format!(
        "the plugin's source is too large to record: at most {MAX_SOURCE_FILES} files and {} MiB in all",
        MAX_SOURCE_BYTES / (1024 * 1024)
    ))
}

/// Reads one module file of a source: a regular file (never a pipe or a device, which could
/// block), within what is left of the size budget, and without NUL characters (PostgreSQL's
/// `jsonb`, where the source is recorded, cannot hold them; no module needs one unescaped).
fn read_recordable(path: &Path, name: &str, budget: &mut usize) -> Result<String> {
    let refused = |why: String| Error::invalid_format(format!("cannot import '{name}': {why}"));
    let metadata = std::fs::metadata(path).map_err(|error| refused(error.to_string()))?;
    if !metadata.is_file() {
        return Err(refused("it is not a regular file".to_owned()));
    }
    let size = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    if size > *budget {
        return Err(too_large());
    }
    let text = std::fs::read_to_string(path).map_err(|error| refused(error.to_string()))?;
    if text.len() > *budget {
        return Err(too_large());
    }
    if text.contains('\0') {
        return Err(refused(
            "it contains a NUL character; write it as an escape (\\0)".to_owned(),
        ));
    }
    *budget -= text.len();
    Ok(text)
}

/// The module specifiers `text` imports, each with whether the module cannot evaluate without
/// it (static imports). A TypeScript module's imports are read from the JavaScript its types
/// are stripped to, which is what runs: imports only types use are gone from it.
fn imports_of(name: &str, text: &str) -> Result<Vec<(String, bool)>> {
    let is_typescript = name.ends_with(".ts") || name.ends_with(".mts");
    let javascript = if is_typescript {
        super::to_javascript(name, text.to_owned())?
    } else {
        text.to_owned()
    };
    let text = javascript.as_str();
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, text, SourceType::mjs()).parse();
    let record = &parsed.module_record;
    let mut imports: Vec<(String, bool)> = record
        .requested_modules
        .iter()
        .filter(|(_, requests)| requests.iter().any(|request| !request.is_type))
        .map(|(specifier, _)| (specifier.to_string(), true))
        .collect();
    for dynamic in record.dynamic_imports.iter() {
        let argument = dynamic.module_request.source_text(text).trim();
        if let Some(literal) = string_literal(argument) {
            imports.push((literal.to_owned(), false));
        }
    }
    imports.sort();
    imports.dedup();
    Ok(imports)
}

/// The text of a quoted literal without escapes (`'./a.js'`, `"./a.js"`, `` `./a.js` ``).
fn string_literal(argument: &str) -> Option<&str> {
    let quote = argument.chars().next()?;
    if !matches!(quote, '\'' | '"' | '`') || argument.len() < 2 || !argument.ends_with(quote) {
        return None;
    }
    let inner = &argument[1..argument.len() - 1];
    let escaped = inner.contains(['\\', quote]);
    let interpolated = quote == '`' && inner.contains("${");
    (!escaped && !interpolated).then_some(inner)
}

/// Where an engine's loader finds the modules a plugin imports.
#[derive(Debug, Clone)]
pub enum ModuleFiles {
    /// The plugins directory (canonical); imports are read from it when the module runs.
    Directory(std::path::PathBuf),
    /// A recorded source: imports come from it alone.
    Recorded(Arc<SourceBundle>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = root.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn a_bundle_holds_the_entry_and_everything_it_imports() {
        let root = directory(&[
            (
                "shop.ts",
                "import type { T } from './types.ts';\nimport { a } from './lib/a.js';\nexport * from './lib/b.mjs';\nexport default { metadata: {}, a };\nconst later = () => import('./lib/lazy.js');",
            ),
            ("types.ts", "export type T = number;"),
            ("lib/a.js", "import { c } from '../common/c.js'; export const a = c;"),
            ("lib/b.mjs", "export const b = 2;"),
            ("lib/lazy.js", "export const lazy = 3;"),
            ("common/c.js", "import { a } from '../lib/a.js'; export const c = 1;"),
            ("unrelated.js", "export const u = 0;"),
        ]);
        let bundle = SourceBundle::read(root.path(), &root.path().join("shop.ts")).unwrap();
        assert_eq!(bundle.entry, "shop.ts");
        let names: Vec<&str> = bundle.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "common/c.js",
                "lib/a.js",
                "lib/b.mjs",
                "lib/lazy.js",
                "shop.ts"
            ],
            "type-only imports and unrelated files are left out; a cycle is read once"
        );
        assert!(bundle.entry_text().starts_with("import type"));
    }

    #[test]
    fn a_missing_static_import_refuses_and_a_missing_dynamic_one_is_left_out() {
        let root = directory(&[
            ("broken.js", "import { x } from './gone.js'; export default {};"),
            (
                "lazy.js",
                "export default { run: () => import('./gone.js'), other: (n) => import('./' + n) };",
            ),
        ]);
        let error = SourceBundle::read(root.path(), &root.path().join("broken.js")).unwrap_err();
        assert!(error.to_string().contains("gone.js"), "{error}");
        let bundle = SourceBundle::read(root.path(), &root.path().join("lazy.js")).unwrap();
        assert_eq!(bundle.files.len(), 1);
    }

    #[test]
    fn a_bundle_keeps_the_loaders_confinement() {
        let root = directory(&[
            (
                "thief.js",
                "import { x } from './other.js'; export default {};",
            ),
            (
                "other.js",
                "export default { metadata: {} }; export const x = 1;",
            ),
            (
                "escape.js",
                "import { y } from '../outside.js'; export default {};",
            ),
        ]);
        let error = SourceBundle::read(root.path(), &root.path().join("thief.js")).unwrap_err();
        assert!(error.to_string().contains("entry file"), "{error}");
        let error = SourceBundle::read(root.path(), &root.path().join("escape.js")).unwrap_err();
        assert!(
            error.to_string().contains("leaves the plugin's directory"),
            "{error}"
        );
    }

    #[test]
    fn the_digest_changes_with_any_file_and_only_then() {
        let root = directory(&[
            ("p.js", "import { a } from './a.js'; export default {};"),
            ("a.js", "export const a = 1;"),
        ]);
        let read = || SourceBundle::read(root.path(), &root.path().join("p.js")).unwrap();
        let first = read();
        assert_eq!(first.digest(), read().digest());
        std::fs::write(root.path().join("a.js"), "export const a = 2;").unwrap();
        assert_ne!(first.digest(), read().digest(), "an import changed");
    }

    #[test]
    fn what_the_record_cannot_hold_or_a_read_could_block_on_is_refused() {
        let root = directory(&[
            (
                "nul.js",
                "import { x } from './lib/nul.js'; export default {};",
            ),
            ("lib/nul.js", "export const x = '\0';"),
            (
                "lazy.js",
                "export default { later: () => import('./lib/pipe.js') };",
            ),
        ]);
        let error = SourceBundle::read(root.path(), &root.path().join("nul.js")).unwrap_err();
        assert!(error.to_string().contains("NUL"), "{error}");
        #[cfg(unix)]
        {
            let pipe = root.path().join("lib/pipe.js");
            let made = std::process::Command::new("mkfifo").arg(&pipe).status();
            if made.is_ok_and(|status| status.success()) {
                let bundle = SourceBundle::read(root.path(), &root.path().join("lazy.js")).unwrap();
                assert_eq!(bundle.files.len(), 1, "a pipe is never read");
            }
        }
    }

    #[test]
    fn a_typescript_import_only_types_use_is_not_part_of_the_source() {
        let root = directory(&[(
            "shapes.ts",
            "import { Shape } from './shape.d.ts';\nconst area = (shape: Shape): number => shape.w * shape.h;\nexport default { metadata: {}, area };",
        )]);
        let bundle = SourceBundle::read(root.path(), &root.path().join("shapes.ts")).unwrap();
        assert_eq!(bundle.files.len(), 1, "{:?}", bundle.files.keys());
    }

    #[test]
    fn only_plain_literals_name_a_dynamic_import() {
        assert_eq!(string_literal("'./a.js'"), Some("./a.js"));
        assert_eq!(string_literal("\"./a.js\""), Some("./a.js"));
        assert_eq!(string_literal("`./a.js`"), Some("./a.js"));
        assert_eq!(string_literal("`./${name}.js`"), None);
        assert_eq!(string_literal("'./' + name"), None);
        assert_eq!(string_literal("name"), None);
        assert_eq!(string_literal("'"), None);
    }
}
