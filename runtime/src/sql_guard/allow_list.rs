//! The allow-lists: which expressions, functions, types and literals a statement may use.
//!
//! Everything here is an allow-list on purpose: the guard understands only what it lets through,
//! so a construct it has not been taught is refused rather than passed unchecked. PostgreSQL
//! reaches functions in ways that do not look like calls: attribute notation (`(x).f` and
//! `t.f` are `f(x)` and `f(t)` when `f` is not a column), casts to the object-identifier types
//! (`'name'::regclass` looks a relation up, and in a default pins it), and keywords that are
//! functions (`current_user`). Each has a rule below.

use std::collections::HashMap;

use sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, CastKind, DataType, DollarQuotedString, Function,
    FunctionArguments, Value, Visit, Visitor,
};

use super::*;

/// The longest piece of a refused expression quoted in the refusal.
const MAX_QUOTED_EXPRESSION_CHARS: usize = 120;

/// Unquoted words PostgreSQL reads as calls of functions without parentheses.
const KEYWORD_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_role",
    "current_schema",
    "current_user",
    "session_user",
    "system_user",
    "user",
];

/// Set-returning functions on the allow-list that return rows of several columns: their
/// whole-row value is a record, which no dangerous built-in function takes.
const COMPOSITE_TABLE_FUNCTIONS: &[&str] = &["jsonb_each", "jsonb_each_text"];

/// Types whose names the parser keeps as plain names, and which hold values only.
const ALLOWED_NAMED_TYPES: &[&str] = &[
    "serial",
    "serial2",
    "serial4",
    "serial8",
    "smallserial",
    "bigserial",
    "timestamptz",
    "timetz",
    "inet",
    "cidr",
    "macaddr",
    // An object number, and the one-byte internal `"char"`: values only, unlike the `reg*`
    // types that look names up.
    "oid",
    "char",
];

/// The functions in `FROM` of a statement, by the name the statement reads them by, with the
/// columns `name.column` may name (`None`: any, the whole row being a record).
///
/// PostgreSQL reads `g.f` as the call `f(g)` when `g` is a function in `FROM` and `f` is not one
/// of its columns; for a function returning plain values (`unnest(ARRAY['/etc/passwd']) AS g`)
/// that is a call of any function on any text. So `g.f` is allowed only for `g`'s own columns.
pub(super) type FunctionAliases = HashMap<String, Option<Vec<String>>>;

/// Collects [`FunctionAliases`] over the whole statement, before the walk: a select list is
/// visited before its `FROM`. Names are collected statement-wide, which is stricter than
/// PostgreSQL's scopes and never looser.
pub(super) fn function_aliases(statement: &Statement) -> FunctionAliases {
    struct Collector(FunctionAliases);
    impl Visitor for Collector {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let (function, alias) = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    alias,
                    ..
                }
                | TableFactor::Function { name, alias, .. } => (last_name(name), alias),
                TableFactor::UNNEST { alias, .. } => ("unnest".to_string(), alias),
                _ => return ControlFlow::Continue(()),
            };
            let read_as = alias.as_ref().map_or_else(
                || function.clone(),
                |alias| folded(&alias.name).into_owned(),
            );
            let columns = match alias {
                Some(alias) if !alias.columns.is_empty() => Some(
                    alias
                        .columns
                        .iter()
                        .map(|column| folded(&column.name).into_owned())
                        .collect(),
                ),
                _ if COMPOSITE_TABLE_FUNCTIONS.contains(&function.as_str()) => None,
                _ => Some(vec![read_as.clone()]),
            };
            // The same name may stand for several functions in different scopes: `name.column`
            // passes only if it is a column of every one of them (keeping only the last one let a
            // composite `jsonb_each(...) AS g` in a subquery unlock `g.f` for a scalar `g` outside).
            let merged = match (self.0.remove(&read_as), columns) {
                (None | Some(None), columns) => columns,
                (Some(known), None) => known,
                (Some(Some(known)), Some(columns)) => Some(
                    known
                        .into_iter()
                        .filter(|column| columns.contains(column))
                        .collect(),
                ),
            };
            self.0.insert(read_as, merged);
            ControlFlow::Continue(())
        }
    }
    let mut collector = Collector(HashMap::new());
    let _ = statement.visit(&mut collector);
    collector.0
}

fn last_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => folded(ident).into_owned(),
        _ => String::new(),
    }
}

/// Checks one expression node (the walk visits every node): only the kinds listed here pass.
pub(super) fn check_expression_kind(
    expression: &Expr,
    function_aliases: &FunctionAliases,
) -> Result<()> {
    match expression {
        Expr::Identifier(ident) => check_column_name(ident),
        Expr::CompoundIdentifier(parts) => check_qualified_column(parts, function_aliases),
        Expr::CompoundFieldAccess { access_chain, .. } => {
            if access_chain
                .iter()
                .all(|access| matches!(access, AccessExpr::Subscript(_)))
            {
                Ok(())
            } else {
                Err(not_allowed(
                    "field selection '(expression).name' is not allowed: PostgreSQL may read \
                     it as a call of the function 'name'; select columns by name",
                ))
            }
        }
        // Literals themselves are checked where every value is visited (`check_literal`).
        Expr::Value(_) => Ok(()),
        Expr::TypedString(typed) => check_data_type(&typed.data_type),
        Expr::Cast {
            kind,
            data_type,
            format,
            ..
        } => {
            if !matches!(kind, CastKind::Cast | CastKind::DoubleColon) || format.is_some() {
                return Err(not_allowed(format!(
                    "this cast is not allowed: {}; use CAST(x AS type) or x::type",
                    quoted(expression)
                )));
            }
            check_data_type(data_type)
        }
        Expr::Function(function) => check_function(function),
        Expr::BinaryOp {
            op: BinaryOperator::PGCustomBinaryOperator(_),
            ..
        } => Err(not_allowed("OPERATOR(...) is not allowed")),
        Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::InList { .. }
        | Expr::InSubquery { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::SimilarTo { .. }
        | Expr::AnyOp { .. }
        | Expr::AllOp { .. }
        | Expr::AtTimeZone { .. }
        | Expr::Extract { .. }
        | Expr::Ceil { .. }
        | Expr::Floor { .. }
        | Expr::Position { .. }
        | Expr::Substring { .. }
        | Expr::Trim { .. }
        | Expr::Overlay { .. }
        | Expr::Nested(_)
        | Expr::Case { .. }
        | Expr::Exists { .. }
        | Expr::Subquery(_)
        | Expr::GroupingSets(_)
        | Expr::Cube(_)
        | Expr::Rollup(_)
        | Expr::Tuple(_)
        | Expr::Array(_)
        | Expr::Interval(_)
        | Expr::Wildcard(_)
        | Expr::QualifiedWildcard(..) => Ok(()),
        other => Err(not_allowed(format!(
            "this expression is not allowed: {}",
            quoted(other)
        ))),
    }
}

/// A one-part column reference; the keyword functions are refused (quoted, they are columns).
fn check_column_name(ident: &Ident) -> Result<()> {
    if ident.quote_style.is_none() && KEYWORD_FUNCTIONS.contains(&folded(ident).as_ref()) {
        return Err(not_allowed(format!(
            "'{}' is not allowed: PostgreSQL reads it as a function; quote a column of that name",
            ident.value
        )));
    }
    Ok(())
}

/// `table.column`: at most two parts, and for a function in `FROM` only its own columns.
fn check_qualified_column(parts: &[Ident], function_aliases: &FunctionAliases) -> Result<()> {
    let [relation, column] = parts else {
        let written: Vec<String> = parts.iter().map(Ident::to_string).collect();
        return Err(not_allowed(format!(
            "'{}' is not allowed: a column reference is 'column' or 'table.column' (PostgreSQL \
             may read more parts as a function call)",
            written.join(".")
        )));
    };
    let relation_name = folded(relation);
    let Some(Some(columns)) = function_aliases.get(relation_name.as_ref()) else {
        return Ok(());
    };
    let column_name = folded(column);
    if columns.iter().any(|known| known == column_name.as_ref()) {
        return Ok(());
    }
    Err(not_allowed(format!(
        "'{relation}.{column}' is not allowed: '{relation_name}' is a function in FROM, and \
         PostgreSQL reads '{relation_name}.{column_name}' as the call {column_name}({relation_name}) \
         unless it is one of its columns ({}); name its columns with AS {relation_name}(...)",
        columns.join(", ")
    )))
}

fn check_function(function: &Function) -> Result<()> {
    check_function_name(&function.name)?;
    if function.uses_odbc_syntax || !matches!(function.parameters, FunctionArguments::None) {
        return Err(not_allowed(format!(
            "this form of function call is not allowed: {}",
            quoted(function)
        )));
    }
    Ok(())
}

/// Literals whose text PostgreSQL reads exactly as the parser did: numbers in plain decimal
/// notation, `'...'` strings (PostgreSQL's `standard_conforming_strings` is on for plugins'
/// connections, so a backslash is a backslash), booleans, `NULL` and `$n` parameters. Other
/// kinds (`E''`, `N''`, `B''`, `X''`, `U&''`, dollar quoting) are printed back differently than
/// they were written, or read differently by PostgreSQL; their values belong in parameters.
pub(super) fn check_literal(value: &Value) -> Result<()> {
    match value {
        Value::Number(text, false)
            if text.bytes().all(|byte| {
                byte.is_ascii_digit() || matches!(byte, b'.' | b'e' | b'E' | b'+' | b'-')
            }) =>
        {
            Ok(())
        }
        Value::Placeholder(text)
            if text.len() > 1
                && text.starts_with('$')
                && text[1..].bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            Ok(())
        }
        Value::SingleQuotedString(_) | Value::Boolean(_) | Value::Null => Ok(()),
        other => Err(not_allowed(format!(
            "the literal {} is not allowed: write numbers in decimal and strings as '...', or \
             pass the value as a parameter ($1)",
            quoted(other)
        ))),
    }
}

/// Rewrites a `'...'` literal that holds a quote or a backslash as a dollar-quoted string with
/// the same value (`$q$it's$q$`), which PostgreSQL reads with no escapes at all. The parser's
/// printer writes such values back with the wrong escaping (`''` inside a value comes out
/// undoubled), which the round-trip check would refuse; dollar quoting prints them exactly.
pub(super) fn print_literal_exactly(value: &mut Value) {
    let Value::SingleQuotedString(text) = value else {
        return;
    };
    if !text.contains(['\'', '\\']) {
        return;
    }
    // The first `$tag$` in the literal must be its closing delimiter.
    let tag = (0u32..)
        .map(|number| format!("q{number}"))
        .find(|tag| {
            let delimiter = format!("${tag}$");
            format!("{text}{delimiter}").find(&delimiter) == Some(text.len())
        })
        .unwrap_or_default();
    *value = Value::DollarQuotedString(DollarQuotedString {
        value: std::mem::take(text),
        tag: Some(tag),
    });
}

/// Types that hold values only. Object-identifier types (`regclass`, `regproc`, ...) look names
/// up and pin what they name; a table's row type pins that table; other types may come from
/// extensions or other plugins. They are all refused.
pub(super) fn check_data_type(data_type: &DataType) -> Result<()> {
    use DataType as T;
    match data_type {
        T::Character(_)
        | T::Char(_)
        | T::CharacterVarying(_)
        | T::CharVarying(_)
        | T::Varchar(_)
        | T::Uuid
        | T::Numeric(_)
        | T::Decimal(_)
        | T::Dec(_)
        | T::Float(_)
        | T::Int2(_)
        | T::SmallInt(_)
        | T::Int(_)
        | T::Int4(_)
        | T::Int8(_)
        | T::Integer(_)
        | T::BigInt(_)
        | T::Float4
        | T::Real
        | T::Float8
        | T::DoublePrecision
        | T::Bool
        | T::Boolean
        | T::Date
        | T::Time(..)
        | T::Timestamp(..)
        | T::Interval { .. }
        | T::JSON
        | T::JSONB
        | T::Text
        | T::Bytea
        | T::Bit(_)
        | T::BitVarying(_)
        | T::VarBit(_) => Ok(()),
        T::Array(
            ArrayElemTypeDef::SquareBracket(element, _)
            | ArrayElemTypeDef::AngleBracket(element)
            | ArrayElemTypeDef::Parenthesis(element),
        ) => check_data_type(element),
        T::Custom(name, modifiers) if modifiers.is_empty() => match name.0.as_slice() {
            [ObjectNamePart::Identifier(ident)]
                if ALLOWED_NAMED_TYPES.contains(&folded(ident).as_ref()) =>
            {
                Ok(())
            }
            _ => Err(type_refused(data_type)),
        },
        _ => Err(type_refused(data_type)),
    }
}

fn type_refused(data_type: &DataType) -> Error {
    not_allowed(format!(
        "type '{}' is not allowed: a plugin may use the built-in value types (integers, \
         numeric, floats, text, varchar, boolean, dates and times, interval, uuid, json, jsonb, \
         bytea, inet, serials and arrays of them)",
        quoted(data_type)
    ))
}

/// A refused piece of SQL, shortened for the refusal message.
fn quoted(piece: &impl std::fmt::Display) -> String {
    let text = piece.to_string();
    match text.char_indices().nth(MAX_QUOTED_EXPRESSION_CHARS) {
        Some((cut, _)) => format!("'{}…'", &text[..cut]),
        None => format!("'{text}'"),
    }
}

pub(super) fn check_function_name(name: &ObjectName) -> Result<()> {
    let ident = match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => ident,
        _ => {
            return Err(not_allowed(format!(
                "qualified function name '{name}' is not allowed"
            )))
        }
    };
    let function = folded(ident);
    if is_allowed_function(&function) {
        Ok(())
    } else {
        Err(not_allowed(format!("function '{function}' is not allowed")))
    }
}

/// Built-in functions that only compute on their arguments: none reads files, reaches another
/// database, runs SQL of its own, changes settings or sleeps. `array`, `row` and `grouping` are
/// SQL syntax (`ARRAY(SELECT ...)`, `ROW(...)`, `GROUPING(...)`) the parser reports as calls;
/// `current_time` and `localtime` are the SQL-standard time values beside `current_timestamp`.
fn is_allowed_function(name: &str) -> bool {
    matches!(
        name,
        // Aggregates.
        "count" | "sum" | "avg" | "min" | "max" | "bool_and" | "bool_or" | "every"
            | "array_agg" | "string_agg" | "json_agg" | "jsonb_agg" | "json_object_agg"
            | "jsonb_object_agg"
            // JSON.
            | "json_build_object" | "jsonb_build_object" | "json_build_array"
            | "jsonb_build_array" | "to_json" | "to_jsonb" | "jsonb_set" | "jsonb_insert"
            | "jsonb_strip_nulls" | "jsonb_array_length" | "json_array_length" | "jsonb_typeof"
            | "jsonb_extract_path" | "jsonb_extract_path_text" | "jsonb_array_elements"
            | "jsonb_array_elements_text" | "jsonb_each" | "jsonb_each_text"
            | "jsonb_object_keys"
            // Conditionals and arithmetic.
            | "coalesce" | "nullif" | "greatest" | "least" | "abs" | "ceil" | "ceiling"
            | "floor" | "round" | "trunc" | "mod" | "power" | "sqrt" | "exp" | "ln" | "log"
            | "sign" | "random"
            // Strings.
            | "lower" | "upper" | "initcap" | "length" | "char_length" | "octet_length"
            | "substring" | "substr" | "trim" | "btrim" | "ltrim" | "rtrim" | "lpad" | "rpad"
            | "concat" | "concat_ws" | "replace" | "split_part" | "position" | "strpos"
            | "left" | "right" | "reverse" | "repeat" | "starts_with" | "regexp_replace"
            | "regexp_match" | "regexp_matches" | "format" | "md5" | "encode" | "decode"
            | "to_char" | "to_number" | "to_date" | "to_timestamp"
            // Dates and times.
            | "now" | "current_date" | "current_time" | "current_timestamp" | "localtime"
            | "localtimestamp" | "clock_timestamp" | "date_trunc" | "date_part" | "extract"
            | "age" | "make_date" | "make_timestamp" | "make_interval"
            // Identifiers, arrays and set-returning functions.
            | "gen_random_uuid" | "uuid_generate_v4" | "array_length" | "array_position"
            | "array_remove" | "array_append" | "cardinality" | "unnest" | "generate_series"
            // Window functions.
            | "row_number" | "rank" | "dense_rank" | "lag" | "lead" | "first_value"
            | "last_value" | "ntile" | "percent_rank" | "cume_dist"
            // SQL syntax the parser reports as function calls.
            | "array" | "row" | "grouping"
    )
}
