//! The SQL guard: checks a plugin's statement against its table grants and rewrites its tables.
//!
//! - this file: [`guard_statement`], the walk over the tree and the round-trip check;
//! - `statements`: what each allowed statement kind may hold;
//! - `allow_list`: the expressions, functions, types and literals a statement may use;
//! - `dialect`: the parser's dialect; `cost`: the parse-cost limit checked before parsing;
//! - `names`: identifiers as PostgreSQL resolves them; `refusals`: what is refused before or
//!   beside the walk, and how refusals and syntax errors are reported;
//! - `split`: a migration's SQL cut into its statements.

use std::any::TypeId;
use std::borrow::Cow;
use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTable, AlterTableOperation, BinaryOperator, CascadeOption, ColumnDef, ColumnOption,
    ConflictTarget, CreateIndex, CreateTable, Delete, DropBehavior, Expr, FromTable, Ident, Insert,
    ObjectName, ObjectNamePart, ObjectType, OnInsert, Query, RenameTableNameKind, SetExpr,
    Statement, TableAlias, TableConstraint, TableFactor, TableObject, Truncate, Update, VisitMut,
    VisitorMut,
};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

mod allow_list;
mod cost;
mod dialect;
mod names;
mod refusals;
mod split;
mod statements;

use allow_list::check_function_name;
use cost::check_parse_cost;
use dialect::GuardDialect;
use names::{alias_for, folded, single_identifier};
use refusals::{check_plain_table_factor, check_set_expression, not_allowed, syntax_error};
pub use split::split_statements;

use crate::access::AccessLevel;
use crate::error::{Error, Result};
use crate::resources::{physical_name, ResourceGrants, ResourceKind};

/// The longest statement the guard accepts, in bytes.
///
/// The parser builds chains such as `1+1+1...` iteratively, but dropping, visiting and printing
/// the resulting tree recurse once per operator. Measured on a 2 MiB thread stack, parsing and
/// dropping the cheapest such chain (two bytes per level) overflows at about 22,000 levels in a
/// debug build and 25,000 to 32,000 in a release build; a stack overflow aborts the whole host,
/// so the limit keeps every statement well below that (at most about 16,000 levels).
const MAX_STATEMENT_BYTES: usize = 32 * 1024;

/// The deepest nesting of expressions the guard accepts, so that checking and printing a
/// statement never recurse deeply whatever its length.
const MAX_EXPRESSION_DEPTH: usize = 1_000;

/// The statement kinds a plugin may run, for refusal messages.
const ALLOWED_STATEMENTS: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE/ALTER/DROP TABLE, \
     CREATE/DROP INDEX and TRUNCATE";

/// What a statement does, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// A top-level query: `SELECT`, `VALUES`, a set operation, or `WITH ... SELECT` (whose `WITH`
    /// items may modify data).
    Query,
    /// Every other allowed statement, including `WITH ... INSERT/UPDATE/DELETE`.
    Command,
}

/// A statement that passed the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedStatement {
    /// The statement with every table replaced by its quoted physical name.
    pub sql: String,
    /// Unprefixed tables it touches, sorted, deduplicated.
    pub tables: Vec<String>,
    pub kind: StatementKind,
    /// Physical names of the indexes a `DROP INDEX` drops. The guard cannot see which table an
    /// index belongs to, so the gateway looks it up and checks for `owner` on it before running.
    pub dropped_indexes: Vec<String>,
}

/// Parses `sql` (PostgreSQL dialect), checks every relation against `grants`, and rewrites it.
///
/// The plugin writes its own, unprefixed table names. The statement is tokenized and parsed once,
/// walked once by a [`VisitorMut`] that checks and rewrites as it goes, and printed with the AST's
/// `Display`, so PostgreSQL runs exactly what was checked. What it enforces (`PLUGIN_API.md`,
/// `context.database`):
///
/// - One statement of an allowed kind: a query (`SELECT`, `WITH`, set operations, `VALUES`),
///   `INSERT`, `UPDATE`, `DELETE`, `CREATE`/`ALTER`/`DROP TABLE`, `CREATE`/`DROP INDEX`, `TRUNCATE`.
///   Data-modifying `WITH` items may hold `INSERT`, `UPDATE` and `DELETE`.
/// - Every table, wherever it appears, is granted; names are case-folded as PostgreSQL does
///   (unquoted to lowercase, quoted kept as is). Names of `WITH` items, in their scope, and aliases
///   are not tables. Schema-qualified names are refused.
/// - Every function call is on an allow-list of unqualified built-ins that cannot read files,
///   reach other databases or run SQL of their own.
/// - `CASCADE` is refused wherever it appears (`DROP`, `TRUNCATE`, `ALTER TABLE ... DROP`): it would
///   change objects that depend on the named tables, which may belong to other plugins.
/// - The statement is at most 32 KiB, nests expressions at most 1,000 deep, and does not nest
///   special syntax so deeply that parsing would take long; the parser's cost and the recursion
///   of any walk over the tree stay bounded, whatever the plugin sends.
///
/// Rewriting:
///
/// - A table becomes its quoted physical identifier (`"orders_users"`, valid even when the plugin
///   name has `-`). A table in `FROM`, `JOIN`, `UPDATE`, `DELETE FROM` or `INSERT INTO` written
///   without an alias gets its written name as alias (`FROM "orders_users" AS users`), so that
///   column references qualified with the table name keep working.
/// - Index names and explicitly written constraint names live in PostgreSQL's per-schema namespace
///   of relations (a primary key or unique constraint creates an index of the same name), so they
///   are prefixed like tables, through [`physical_name`] with [`ResourceKind::Table`]: `CREATE INDEX
///   by_email ON users ...` creates `"orders_by_email"`, and `DROP INDEX by_email` drops it. Names
///   PostgreSQL generates (`orders_users_pkey`, `orders_users_email_idx`) already start with the
///   physical table name, so `DROP INDEX users_email_idx` finds them for tables that are not shared.
/// - Parameters (`$1`, `$2`, ...) and everything else pass through unchanged.
///
/// Errors: [`Error::TableAccessDenied`] for a table the plugin was not granted;
/// [`Error::SqlNotAllowed`] for anything else the guard refuses, including SQL of a refused
/// kind it cannot parse; [`Error::Database`] with SQLSTATE 42601 for a syntax error in a
/// statement of an allowed kind, as PostgreSQL would report it. Refusing has no effect anywhere.
pub fn guard_statement(
    plugin: &str,
    sql: &str,
    grants: &ResourceGrants,
) -> Result<GuardedStatement> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(not_allowed(format!(
            "statement is {} bytes, over the {MAX_STATEMENT_BYTES}-byte limit",
            sql.len()
        )));
    }
    let dialect = GuardDialect(PostgreSqlDialect {});
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|error| syntax_error(sql, error.into()))?;
    check_parse_cost(&tokens)?;
    // A function in `FROM` is always followed by `(`; without one there are no function aliases
    // to collect, and the pre-pass over the whole tree is skipped.
    let may_have_functions = tokens.iter().any(|token| token.token == Token::LParen);
    let mut statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|error| syntax_error(sql, error))?;
    let mut statement = match statements.len() {
        1 => statements.remove(0),
        0 => return Err(not_allowed("no statement to run")),
        count => {
            return Err(not_allowed(format!(
                "only one statement per call, found {count}"
            )))
        }
    };
    let function_aliases = if may_have_functions {
        allow_list::function_aliases(&statement)
    } else {
        allow_list::FunctionAliases::new()
    };
    let mut guard = Guard::new(plugin, grants, function_aliases);
    if statement.visit(&mut guard).is_break() {
        return Err(guard
            .error
            .unwrap_or_else(|| not_allowed("statement refused")));
    }
    let mut tables = guard.tables;
    tables.sort_unstable();
    tables.dedup();
    let sql = statement.to_string();
    check_round_trip(&dialect, &sql, &statement)?;
    Ok(GuardedStatement {
        sql,
        tables,
        kind: statement_kind(&statement),
        dropped_indexes: guard.dropped_indexes,
    })
}

/// Parses the printed statement again and requires the very tree that was checked.
///
/// PostgreSQL runs the printed text, not the tree. Where the printer writes something the parser
/// reads differently (a literal or identifier escaped in another way than it was written, a
/// construct printed in a form that means something else), what runs would differ from what was
/// checked; such a statement is refused instead.
fn check_round_trip(dialect: &GuardDialect, printed: &str, checked: &Statement) -> Result<()> {
    let refused = || {
        not_allowed(
            "statement does not read back the same after checking (an unusual literal, \
             identifier or construct); write it plainly and pass values as parameters ($1)",
        )
    };
    let tokens = Tokenizer::new(dialect, printed)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|_| refused())?;
    check_parse_cost(&tokens)?;
    let reparsed = Parser::new(dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|_| refused())?;
    match reparsed.as_slice() {
        [statement] if statement == checked => Ok(()),
        _ => Err(refused()),
    }
}

/// Whether the statement returns rows as a query does.
fn statement_kind(statement: &Statement) -> StatementKind {
    let Statement::Query(query) = statement else {
        return StatementKind::Command;
    };
    let mut body = &*query.body;
    loop {
        match body {
            SetExpr::Query(inner) => body = &inner.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                return StatementKind::Command
            }
            SetExpr::Select(_)
            | SetExpr::SetOperation { .. }
            | SetExpr::Values(_)
            | SetExpr::Table(_) => return StatementKind::Query,
        }
    }
}

/// The `WITH` items of one query, and how many of them the part being visited can see.
struct CteScope {
    /// The query that declares them, to know when the scope ends.
    owner: *const Query,
    /// Their case-folded names, in declaration order.
    names: Vec<String>,
    /// Their bodies, to know which item is being visited.
    bodies: Vec<*const Query>,
    /// How many names, from the first, are visible: without `RECURSIVE` an item sees only the
    /// items before it, and the query's own body sees them all.
    visible: usize,
    recursive: bool,
}

/// Checks and rewrites a statement in one walk; stops at the first refusal, kept in `error`.
struct Guard<'a> {
    plugin: &'a str,
    grants: &'a ResourceGrants,
    /// Unprefixed names of the tables touched so far.
    tables: Vec<String>,
    /// Names already checked (tables rewritten, table functions, `WITH` references), so that the
    /// visitor's relation hook can refuse any relation the guard does not know how to check.
    /// Pointers are only compared, never dereferenced; the tree is not moved during the walk.
    checked_names: Vec<*const ObjectName>,
    cte_scopes: Vec<CteScope>,
    /// The functions in the statement's `FROM` items, for the attribute-notation rule.
    function_aliases: allow_list::FunctionAliases,
    /// The queries being visited that lock the rows they read (`FOR UPDATE`, `FOR SHARE`):
    /// PostgreSQL asks for `UPDATE` rights on their tables, so they need `write`.
    locking_queries: Vec<*const Query>,
    /// Physical names of the indexes a `DROP INDEX` drops.
    dropped_indexes: Vec<String>,
    statement_depth: usize,
    expression_depth: usize,
    error: Option<Error>,
}

impl<'a> Guard<'a> {
    fn new(
        plugin: &'a str,
        grants: &'a ResourceGrants,
        function_aliases: allow_list::FunctionAliases,
    ) -> Self {
        Guard {
            plugin,
            grants,
            function_aliases,
            tables: Vec::new(),
            checked_names: Vec::new(),
            cte_scopes: Vec::new(),
            locking_queries: Vec::new(),
            dropped_indexes: Vec::new(),
            statement_depth: 0,
            expression_depth: 0,
            error: None,
        }
    }

    /// Turns a check's result into the visitor's control flow, keeping the refusal.
    fn flow(&mut self, result: Result<()>) -> ControlFlow<()> {
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.error = Some(error);
                ControlFlow::Break(())
            }
        }
    }

    fn mark_checked(&mut self, name: &ObjectName) {
        self.checked_names.push(name);
    }

    fn is_checked(&self, name: &ObjectName) -> bool {
        let pointer: *const ObjectName = name;
        self.checked_names.contains(&pointer)
    }

    /// The level reading a table needs where the walk is.
    fn read_level(&self) -> AccessLevel {
        if self.locking_queries.is_empty() {
            AccessLevel::Read
        } else {
            AccessLevel::Write
        }
    }

    /// Checks that `name` is a granted table, rewrites it to the quoted physical name and returns
    /// the identifier as written, for use as an alias.
    ///
    /// `needed` is the level this use of the table needs: `read` where rows are only read,
    /// `write` for a target of `INSERT`/`UPDATE`/`DELETE` (and rows locked by `FOR UPDATE`),
    /// `owner` for DDL, indexes, `TRUNCATE` and foreign keys pointing at it (which restrict
    /// what its owner may delete).
    fn rewrite_table(&mut self, name: &mut ObjectName, needed: AccessLevel) -> Result<Ident> {
        let ident = single_identifier(name, "table")?;
        let table = folded(ident);
        let Some(grant) = self.grants.grant(ResourceKind::Table, &table) else {
            return Err(Error::TableAccessDenied {
                table: table.into_owned(),
                allowed: self.grants.names(ResourceKind::Table),
            });
        };
        grant.require(ResourceKind::Table, needed)?;
        let physical = Ident::with_quote('"', grant.physical.as_str());
        self.tables.push(table.into_owned());
        let written = match name.0.first_mut() {
            Some(ObjectNamePart::Identifier(ident)) => std::mem::replace(ident, physical),
            _ => unreachable!("single_identifier accepted the name"),
        };
        self.mark_checked(name);
        Ok(written)
    }

    /// Rewrites a table that is the target of `UPDATE` or `DELETE`: always a table, never a
    /// `WITH` item, as in PostgreSQL.
    fn rewrite_target_table(&mut self, factor: &mut TableFactor, statement: &str) -> Result<()> {
        check_plain_table_factor(factor)?;
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let written = self.rewrite_table(name, AccessLevel::Write)?;
                if alias.is_none() {
                    *alias = Some(alias_for(written));
                }
                Ok(())
            }
            _ => Err(not_allowed(format!("{statement} must name one table"))),
        }
    }

    /// Rewrites an index or constraint name into the plugin's part of PostgreSQL's namespace.
    fn rewrite_namespaced_ident(&self, ident: &mut Ident, what: &str) -> Result<()> {
        let name = folded(ident);
        let physical = physical_name(ResourceKind::Table, self.plugin, &name).map_err(|error| {
            let reason = match error {
                Error::InvalidName { reason } => reason,
                other => other.to_string(),
            };
            not_allowed(format!("{what} name '{name}' is not valid: {reason}"))
        })?;
        *ident = Ident::with_quote('"', physical);
        Ok(())
    }

    fn rewrite_namespaced_name(&self, name: &mut ObjectName, what: &str) -> Result<()> {
        single_identifier(name, what)?;
        match name.0.first_mut() {
            Some(ObjectNamePart::Identifier(ident)) => self.rewrite_namespaced_ident(ident, what),
            _ => unreachable!("single_identifier accepted the name"),
        }
    }

    fn rewrite_constraint_name(&self, name: &mut Option<Ident>) -> Result<()> {
        match name {
            Some(ident) => self.rewrite_namespaced_ident(ident, "constraint"),
            None => Ok(()),
        }
    }

    /// Whether `name` refers to a `WITH` item visible where the walk is.
    fn is_cte(&self, name: &str) -> bool {
        self.cte_scopes.iter().rev().any(|scope| {
            scope.names[..scope.visible]
                .iter()
                .any(|cte_name| cte_name == name)
        })
    }

    /// Checks what the visitor cannot see on its own in a query, and opens its `WITH` scope.
    fn enter_query(&mut self, query: &mut Query) -> Result<()> {
        let pointer: *const Query = query;
        if let Some(scope) = self.cte_scopes.last_mut() {
            if let Some(index) = scope.bodies.iter().position(|body| *body == pointer) {
                scope.visible = if scope.recursive {
                    scope.names.len()
                } else {
                    index
                };
            }
        }
        if !query.locks.is_empty() {
            self.locking_queries.push(pointer);
        }
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Err(not_allowed("this query clause is not allowed"));
        }
        check_set_expression(&query.body)?;
        if let Some(with) = &query.with {
            let names = with
                .cte_tables
                .iter()
                .map(|cte| folded(&cte.alias.name).into_owned())
                .collect::<Vec<_>>();
            let bodies = with
                .cte_tables
                .iter()
                .map(|cte| &*cte.query as *const Query)
                .collect();
            self.cte_scopes.push(CteScope {
                owner: pointer,
                visible: if with.recursive { names.len() } else { 0 },
                names,
                bodies,
                recursive: with.recursive,
            });
        }
        Ok(())
    }

    fn leave_query(&mut self, query: &Query) {
        let pointer: *const Query = query;
        if self.locking_queries.last() == Some(&pointer) {
            self.locking_queries.pop();
        }
        if self
            .cte_scopes
            .last()
            .is_some_and(|scope| scope.owner == pointer)
        {
            self.cte_scopes.pop();
        }
        if let Some(scope) = self.cte_scopes.last_mut() {
            if let Some(index) = scope.bodies.iter().position(|body| *body == pointer) {
                scope.visible = if scope.recursive {
                    scope.names.len()
                } else {
                    index + 1
                };
            }
        }
    }

    /// Checks an item of `FROM`, `JOIN`, `USING` or `UPDATE ... FROM`, and rewrites a table.
    fn check_table_factor(&mut self, factor: &mut TableFactor) -> Result<()> {
        check_plain_table_factor(factor)?;
        match factor {
            // The target of UPDATE or DELETE, already rewritten by the statement check.
            TableFactor::Table { name, .. } if self.is_checked(name) => Ok(()),
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                // A set-returning function such as `generate_series(1, 10)`.
                check_function_name(name)?;
                self.mark_checked(name);
                Ok(())
            }
            TableFactor::Table { name, alias, .. } => {
                let table = folded(single_identifier(name, "table")?).into_owned();
                if self.is_cte(&table) {
                    // Printed quoted, so that PostgreSQL reads exactly this name: the parser
                    // takes `FROM ONLY t` as a table `ONLY` aliased `t`, and a `WITH "only"`
                    // item must not let `ONLY t` reach the table `t` unchecked.
                    if let Some(ObjectNamePart::Identifier(ident)) = name.0.first_mut() {
                        *ident = Ident::with_quote('"', table);
                    }
                    self.mark_checked(name);
                    return Ok(());
                }
                let written = self.rewrite_table(name, self.read_level())?;
                if alias.is_none() {
                    *alias = Some(alias_for(written));
                }
                Ok(())
            }
            TableFactor::Function { name, .. } => check_function_name(name),
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. } => Ok(()),
            TableFactor::TableFunction { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::OpenJsonTable { .. }
            | TableFactor::Pivot { .. }
            | TableFactor::Unpivot { .. }
            | TableFactor::MatchRecognize { .. }
            | TableFactor::XmlTable { .. }
            | TableFactor::SemanticView { .. } => Err(not_allowed(format!(
                "this FROM item is not allowed: {factor}"
            ))),
        }
    }

    fn check_expression(&mut self, expression: &Expr) -> Result<()> {
        self.expression_depth += 1;
        if self.expression_depth > MAX_EXPRESSION_DEPTH {
            return Err(not_allowed(format!(
                "expressions nest more than {MAX_EXPRESSION_DEPTH} levels deep"
            )));
        }
        allow_list::check_expression_kind(expression, &self.function_aliases)
    }
}

impl VisitorMut for Guard<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &mut Statement) -> ControlFlow<()> {
        let nested = self.statement_depth > 0;
        self.statement_depth += 1;
        let result = self.check_statement(statement, nested);
        self.flow(result)
    }

    fn post_visit_statement(&mut self, _statement: &mut Statement) -> ControlFlow<()> {
        self.statement_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let result = self.enter_query(query);
        self.flow(result)
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.leave_query(query);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let result = self.check_table_factor(factor);
        self.flow(result)
    }

    /// Every relation the visitor reports must have been checked by a statement or table factor
    /// check; anything else is a place this guard does not understand, so it is refused.
    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if self.is_checked(relation) {
            return ControlFlow::Continue(());
        }
        let result = Err(not_allowed(format!(
            "table reference '{relation}' is not allowed here"
        )));
        self.flow(result)
    }

    fn pre_visit_expr(&mut self, expression: &mut Expr) -> ControlFlow<()> {
        let result = self.check_expression(expression);
        self.flow(result)
    }

    /// Every literal, wherever it stands (expressions, defaults, options), is of a kind that
    /// prints back exactly, and is printed in a form PostgreSQL reads as the same value.
    fn pre_visit_value(&mut self, value: &mut sqlparser::ast::Value) -> ControlFlow<()> {
        let result = allow_list::check_literal(value);
        if result.is_ok() {
            allow_list::print_literal_exactly(value);
        }
        self.flow(result)
    }

    fn post_visit_expr(&mut self, _expression: &mut Expr) -> ControlFlow<()> {
        self.expression_depth -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod red_team_tests;
