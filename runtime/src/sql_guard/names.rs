//! Identifiers as PostgreSQL resolves them.

use super::*;

/// The one identifier of an unqualified name; schema- or catalog-qualified names are refused.
pub(super) fn single_identifier<'n>(name: &'n ObjectName, what: &str) -> Result<&'n Ident> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Ok(ident),
        [_] => Err(not_allowed(format!("{what} name '{name}' is not allowed"))),
        _ => Err(not_allowed(format!(
            "schema-qualified name '{name}' is not allowed; write the {what} name alone"
        ))),
    }
}

/// The name PostgreSQL resolves: unquoted identifiers fold to lowercase (ASCII letters only, as
/// PostgreSQL does for UTF-8 databases), quoted ones stay as written.
pub(super) fn folded(ident: &Ident) -> Cow<'_, str> {
    if ident.quote_style.is_none() && ident.value.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(ident.value.to_ascii_lowercase())
    } else {
        Cow::Borrowed(&ident.value)
    }
}

pub(super) fn alias_for(written: Ident) -> TableAlias {
    TableAlias {
        explicit: true,
        name: written,
        columns: Vec::new(),
    }
}
