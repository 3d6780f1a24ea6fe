//! The SQL guard: checks a plugin's statement against its table grants and rewrites its tables.

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

/// The most parsing work the guard accepts, in tokens weighted by how often the parser may parse
/// them (see [`check_parse_cost`]). A typical statement weighs tens to hundreds; at the limit,
/// parsing takes some tens of milliseconds in a release build.
const MAX_PARSE_WORK: u64 = 1 << 16;

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
    let mut guard = Guard::new(plugin, grants);
    if statement.visit(&mut guard).is_break() {
        return Err(guard
            .error
            .unwrap_or_else(|| not_allowed("statement refused")));
    }
    let mut tables = guard.tables;
    tables.sort_unstable();
    tables.dedup();
    Ok(GuardedStatement {
        sql: statement.to_string(),
        tables,
        kind: statement_kind(&statement),
    })
}

/// PostgreSQL as the parser knows it, with one change: a function argument is never first
/// parsed as a whole expression to see whether a `name: value` label follows (the key syntax of
/// `json_object`, which is not on the allow-list). That attempt parses every argument twice,
/// so `f(f(f(...)))` took time exponential in its depth (20 levels: seconds; 30: hours). PostgreSQL's
/// own named arguments (`f(name => value)`) still parse.
///
/// Everything else is delegated to [`PostgreSqlDialect`], including [`Dialect::dialect`], so the
/// parser's PostgreSQL-specific rules still apply. This list follows sqlparser 0.61's
/// `impl Dialect for PostgreSqlDialect`; the tests compare the two dialects on every statement
/// they use.
#[derive(Debug)]
struct GuardDialect(PostgreSqlDialect);

impl Dialect for GuardDialect {
    fn dialect(&self) -> TypeId {
        self.0.dialect()
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.0.identifier_quote_style(identifier)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn supports_unicode_string_literal(&self) -> bool {
        self.0.supports_unicode_string_literal()
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.0.is_custom_operator_part(ch)
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.0.get_next_precedence(parser)
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        self.0.supports_filter_during_aggregation()
    }
    fn supports_group_by_expr(&self) -> bool {
        self.0.supports_group_by_expr()
    }
    fn prec_value(&self, precedence: Precedence) -> u8 {
        self.0.prec_value(precedence)
    }
    fn allow_extract_custom(&self) -> bool {
        self.0.allow_extract_custom()
    }
    fn allow_extract_single_quotes(&self) -> bool {
        self.0.allow_extract_single_quotes()
    }
    fn supports_create_index_with_clause(&self) -> bool {
        self.0.supports_create_index_with_clause()
    }
    fn supports_explain_with_utility_options(&self) -> bool {
        self.0.supports_explain_with_utility_options()
    }
    fn supports_listen_notify(&self) -> bool {
        self.0.supports_listen_notify()
    }
    fn supports_factorial_operator(&self) -> bool {
        self.0.supports_factorial_operator()
    }
    fn supports_bitwise_shift_operators(&self) -> bool {
        self.0.supports_bitwise_shift_operators()
    }
    fn supports_comment_on(&self) -> bool {
        self.0.supports_comment_on()
    }
    fn supports_load_extension(&self) -> bool {
        self.0.supports_load_extension()
    }
    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.0.supports_named_fn_args_with_colon_operator()
    }
    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        false
    }
    fn supports_empty_projections(&self) -> bool {
        self.0.supports_empty_projections()
    }
    fn supports_nested_comments(&self) -> bool {
        self.0.supports_nested_comments()
    }
    fn supports_string_escape_constant(&self) -> bool {
        self.0.supports_string_escape_constant()
    }
    fn supports_numeric_literal_underscores(&self) -> bool {
        self.0.supports_numeric_literal_underscores()
    }
    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.0.supports_array_typedef_with_brackets()
    }
    fn supports_geometric_types(&self) -> bool {
        self.0.supports_geometric_types()
    }
    fn supports_set_names(&self) -> bool {
        self.0.supports_set_names()
    }
    fn supports_alter_column_type_using(&self) -> bool {
        self.0.supports_alter_column_type_using()
    }
    fn supports_notnull_operator(&self) -> bool {
        self.0.supports_notnull_operator()
    }
    fn supports_interval_options(&self) -> bool {
        self.0.supports_interval_options()
    }
}

/// Refuses a statement whose parsing could take long, before parsing it.
///
/// The parser tries a keyword that starts special syntax (`CAST(`, `POSITION(`, `CASE`, ...) as
/// that syntax first and, when that fails, parses the same tokens again as something else; so
/// each such construct around a token multiplies how often the token may be parsed, by two
/// (three for `POSITION`, which has one more attempt). Nested 20 deep, a hundred bytes took
/// seconds. This sums, over all tokens, the product of the factors of the constructs around
/// them, and refuses the statement above [`MAX_PARSE_WORK`]. Constructs are delimited by their
/// brackets, and a `CASE` by its `END` (or, conservatively, the next comma at its level).
fn check_parse_cost(tokens: &[TokenWithSpan]) -> Result<()> {
    /// One level of brackets: the weight of its tokens on entry, and the `CASE`s open in it.
    struct Level {
        weight: u64,
        open_cases: u32,
    }
    // The outermost level is never closed, so `levels` is never empty.
    let mut levels = vec![Level {
        weight: 1,
        open_cases: 0,
    }];
    let mut pending_factor = 1;
    let mut work: u64 = 0;
    let significant = tokens
        .iter()
        .map(|token| &token.token)
        .filter(|token| !matches!(token, Token::Whitespace(_)));
    let mut significant = significant.peekable();
    while let Some(token) = significant.next() {
        let innermost = levels.len() - 1;
        let level = &levels[innermost];
        let weight = level
            .weight
            .saturating_mul(1u64.checked_shl(level.open_cases).unwrap_or(u64::MAX));
        work = work.saturating_add(weight);
        if work > MAX_PARSE_WORK {
            return Err(not_allowed(
                "statement is too complex to check: too much nesting of CASE, CAST, POSITION \
                 or similar syntax",
            ));
        }
        let mut next_factor = 1;
        match token {
            Token::LParen | Token::LBracket => levels.push(Level {
                weight: weight.saturating_mul(pending_factor),
                open_cases: 0,
            }),
            // An unmatched closing bracket is left for the parser to report.
            Token::RParen | Token::RBracket if innermost > 0 => {
                levels.pop();
            }
            Token::Comma => levels[innermost].open_cases = 0,
            Token::Word(word) if word.keyword == Keyword::CASE => {
                levels[innermost].open_cases += 1;
            }
            Token::Word(word) if word.keyword == Keyword::END => {
                let level = &mut levels[innermost];
                level.open_cases = level.open_cases.saturating_sub(1);
            }
            Token::Word(word)
                if matches!(significant.peek(), Some(Token::LParen | Token::LBracket)) =>
            {
                next_factor = special_syntax_factor(word.keyword);
            }
            _ => {}
        }
        pending_factor = next_factor;
    }
    Ok(())
}

/// How many ways the parser may try a keyword followed by a bracket (see [`check_parse_cost`]).
fn special_syntax_factor(keyword: Keyword) -> u64 {
    match keyword {
        Keyword::POSITION => 3,
        Keyword::ARRAY
        | Keyword::BOX
        | Keyword::CAST
        | Keyword::CEIL
        | Keyword::CIRCLE
        | Keyword::CONVERT
        | Keyword::EXISTS
        | Keyword::EXTRACT
        | Keyword::FLOOR
        | Keyword::INTERVAL
        | Keyword::LINE
        | Keyword::LSEG
        | Keyword::MAP
        | Keyword::MATCH
        | Keyword::NOT
        | Keyword::OVERLAY
        | Keyword::PATH
        | Keyword::POINT
        | Keyword::POLYGON
        | Keyword::SAFE_CAST
        | Keyword::STRUCT
        | Keyword::SUBSTR
        | Keyword::SUBSTRING
        | Keyword::TRIM
        | Keyword::TRY_CAST
        | Keyword::TRY_CONVERT => 2,
        _ => 1,
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
    statement_depth: usize,
    expression_depth: usize,
    error: Option<Error>,
}

impl<'a> Guard<'a> {
    fn new(plugin: &'a str, grants: &'a ResourceGrants) -> Self {
        Guard {
            plugin,
            grants,
            tables: Vec::new(),
            checked_names: Vec::new(),
            cte_scopes: Vec::new(),
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

    /// Checks that `name` is a granted table, rewrites it to the quoted physical name and returns
    /// the identifier as written, for use as an alias.
    fn rewrite_table(&mut self, name: &mut ObjectName) -> Result<Ident> {
        let ident = single_identifier(name, "table")?;
        let table = folded(ident);
        let Some(physical) = self.grants.physical(ResourceKind::Table, &table) else {
            return Err(Error::TableAccessDenied {
                table: table.into_owned(),
                allowed: self.grants.names(ResourceKind::Table),
            });
        };
        let physical = Ident::with_quote('"', physical);
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
                let written = self.rewrite_table(name)?;
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

    /// Checks a statement (the top-level one or one inside a `WITH` item) and rewrites the names
    /// it holds outside table factors and expressions.
    fn check_statement(&mut self, statement: &mut Statement, nested: bool) -> Result<()> {
        match statement {
            Statement::Query(_) if !nested => Ok(()),
            Statement::Insert(insert) => self.check_insert(insert),
            Statement::Update(update) => self.check_update(update),
            Statement::Delete(delete) => self.check_delete(delete),
            other if nested => Err(not_allowed(format!(
                "{} is not allowed inside WITH; only INSERT, UPDATE and DELETE are",
                statement_label(other)
            ))),
            Statement::CreateTable(create) => self.check_create_table(create),
            Statement::AlterTable(alter) => self.check_alter_table(alter),
            Statement::CreateIndex(create) => self.check_create_index(create),
            Statement::Drop {
                object_type,
                names,
                cascade,
                table,
                ..
            } => {
                if *cascade {
                    return Err(cascade_refused(&format!("DROP {object_type}")));
                }
                if table.is_some() {
                    return Err(not_allowed(format!(
                        "DROP {object_type} ... ON is not allowed"
                    )));
                }
                match object_type {
                    ObjectType::Table => {
                        for name in names {
                            self.rewrite_table(name)?;
                        }
                        Ok(())
                    }
                    ObjectType::Index => {
                        for name in names {
                            self.rewrite_namespaced_name(name, "index")?;
                        }
                        Ok(())
                    }
                    other => Err(not_allowed(format!(
                        "DROP {other} is not allowed; a plugin may run {ALLOWED_STATEMENTS}"
                    ))),
                }
            }
            Statement::Truncate(truncate) => self.check_truncate(truncate),
            other => Err(not_allowed(format!(
                "{} is not allowed; a plugin may run {ALLOWED_STATEMENTS}",
                statement_label(other)
            ))),
        }
    }

    fn check_insert(&mut self, insert: &mut Insert) -> Result<()> {
        let TableObject::TableName(name) = &mut insert.table else {
            return Err(not_allowed("INSERT must name a table, not a function"));
        };
        let written = self.rewrite_table(name)?;
        if insert.table_alias.is_none() {
            insert.table_alias = Some(written);
        }
        match &mut insert.on {
            Some(OnInsert::OnConflict(on_conflict)) => {
                if let Some(ConflictTarget::OnConstraint(constraint)) =
                    &mut on_conflict.conflict_target
                {
                    self.rewrite_namespaced_name(constraint, "constraint")?;
                }
                Ok(())
            }
            Some(OnInsert::DuplicateKeyUpdate(_)) => Err(not_allowed(
                "ON DUPLICATE KEY UPDATE is not allowed; use ON CONFLICT",
            )),
            Some(_) => Err(not_allowed("this INSERT clause is not allowed")),
            None => Ok(()),
        }
    }

    fn check_update(&mut self, update: &mut Update) -> Result<()> {
        if !update.table.joins.is_empty() {
            return Err(not_allowed(
                "UPDATE must name exactly one table; join others in FROM",
            ));
        }
        self.rewrite_target_table(&mut update.table.relation, "UPDATE")
    }

    fn check_delete(&mut self, delete: &mut Delete) -> Result<()> {
        let (FromTable::WithFromKeyword(targets) | FromTable::WithoutKeyword(targets)) =
            &mut delete.from;
        match targets.as_mut_slice() {
            [target] if delete.tables.is_empty() && target.joins.is_empty() => {
                self.rewrite_target_table(&mut target.relation, "DELETE")
            }
            _ => Err(not_allowed(
                "DELETE must name exactly one table; join others in USING",
            )),
        }
    }

    fn check_create_table(&mut self, create: &mut CreateTable) -> Result<()> {
        if create.temporary {
            return Err(not_allowed(
                "temporary tables are not allowed: connections are shared between calls",
            ));
        }
        if create.like.is_some() || create.clone.is_some() {
            return Err(not_allowed("CREATE TABLE ... LIKE or CLONE is not allowed"));
        }
        if create.inherits.is_some() {
            return Err(not_allowed("CREATE TABLE ... INHERITS is not allowed"));
        }
        if create.partition_of.is_some() || create.for_values.is_some() {
            return Err(not_allowed("CREATE TABLE ... PARTITION OF is not allowed"));
        }
        self.rewrite_table(&mut create.name)?;
        for column in &mut create.columns {
            self.check_column(column)?;
        }
        for constraint in &mut create.constraints {
            self.check_table_constraint(constraint)?;
        }
        Ok(())
    }

    fn check_column(&mut self, column: &mut ColumnDef) -> Result<()> {
        // The parser reads `CREATE TABLE t (LIKE other)` as a column named `LIKE` of type
        // `other`, which it prints back as the LIKE clause: a table reference it never reports.
        if column.name.quote_style.is_none() && column.name.value.eq_ignore_ascii_case("like") {
            return Err(not_allowed("CREATE TABLE ... (LIKE ...) is not allowed"));
        }
        for option in &mut column.options {
            self.rewrite_constraint_name(&mut option.name)?;
            match &mut option.option {
                ColumnOption::ForeignKey(foreign_key) => {
                    self.rewrite_constraint_name(&mut foreign_key.name)?;
                    self.rewrite_table(&mut foreign_key.foreign_table)?;
                }
                ColumnOption::PrimaryKey(primary_key) => {
                    self.rewrite_constraint_name(&mut primary_key.name)?;
                }
                ColumnOption::Unique(unique) => self.rewrite_constraint_name(&mut unique.name)?,
                ColumnOption::Check(check) => self.rewrite_constraint_name(&mut check.name)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_table_constraint(&mut self, constraint: &mut TableConstraint) -> Result<()> {
        match constraint {
            TableConstraint::ForeignKey(foreign_key) => {
                self.rewrite_constraint_name(&mut foreign_key.name)?;
                self.rewrite_table(&mut foreign_key.foreign_table)?;
                Ok(())
            }
            TableConstraint::PrimaryKey(primary_key) => {
                self.rewrite_constraint_name(&mut primary_key.name)
            }
            TableConstraint::Unique(unique) => self.rewrite_constraint_name(&mut unique.name),
            TableConstraint::Check(check) => self.rewrite_constraint_name(&mut check.name),
            TableConstraint::Index(_) | TableConstraint::FulltextOrSpatial(_) => Err(not_allowed(
                "INDEX or KEY constraints are not allowed; use CREATE INDEX",
            )),
        }
    }

    fn check_alter_table(&mut self, alter: &mut AlterTable) -> Result<()> {
        if alter.location.is_some() || alter.on_cluster.is_some() || alter.table_type.is_some() {
            return Err(not_allowed("this form of ALTER TABLE is not allowed"));
        }
        self.rewrite_table(&mut alter.name)?;
        for operation in &mut alter.operations {
            match operation {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    self.check_column(column_def)?
                }
                AlterTableOperation::DropColumn { drop_behavior, .. } => {
                    refuse_cascade(drop_behavior, "ALTER TABLE ... DROP COLUMN")?
                }
                AlterTableOperation::RenameColumn { .. }
                | AlterTableOperation::AlterColumn { .. } => {}
                AlterTableOperation::AddConstraint { constraint, .. } => {
                    self.check_table_constraint(constraint)?
                }
                AlterTableOperation::DropConstraint {
                    name,
                    drop_behavior,
                    ..
                } => {
                    refuse_cascade(drop_behavior, "ALTER TABLE ... DROP CONSTRAINT")?;
                    self.rewrite_namespaced_ident(name, "constraint")?;
                }
                AlterTableOperation::RenameConstraint { old_name, new_name } => {
                    self.rewrite_namespaced_ident(old_name, "constraint")?;
                    self.rewrite_namespaced_ident(new_name, "constraint")?;
                }
                AlterTableOperation::ValidateConstraint { name } => {
                    self.rewrite_namespaced_ident(name, "constraint")?
                }
                AlterTableOperation::RenameTable {
                    table_name:
                        RenameTableNameKind::To(new_name) | RenameTableNameKind::As(new_name),
                } => {
                    // Renaming is only between two tables the plugin may use.
                    self.rewrite_table(new_name)?;
                }
                other => {
                    return Err(not_allowed(format!(
                        "ALTER TABLE ... {other} is not allowed"
                    )))
                }
            }
        }
        Ok(())
    }

    fn check_create_index(&mut self, create: &mut CreateIndex) -> Result<()> {
        if !create.alter_options.is_empty() {
            return Err(not_allowed("this form of CREATE INDEX is not allowed"));
        }
        self.rewrite_table(&mut create.table_name)?;
        if let Some(name) = &mut create.name {
            self.rewrite_namespaced_name(name, "index")?;
        }
        Ok(())
    }

    fn check_truncate(&mut self, truncate: &mut Truncate) -> Result<()> {
        if matches!(truncate.cascade, Some(CascadeOption::Cascade)) {
            return Err(cascade_refused("TRUNCATE"));
        }
        if truncate.partitions.is_some() || truncate.on_cluster.is_some() {
            return Err(not_allowed("this form of TRUNCATE is not allowed"));
        }
        for target in &mut truncate.table_names {
            self.rewrite_table(&mut target.name)?;
        }
        Ok(())
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
                let written = self.rewrite_table(name)?;
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
        match expression {
            Expr::Function(function) => check_function_name(&function.name),
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(_),
                ..
            } => Err(not_allowed("OPERATOR(...) is not allowed")),
            _ => Ok(()),
        }
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

    fn post_visit_expr(&mut self, _expression: &mut Expr) -> ControlFlow<()> {
        self.expression_depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Refuses what a query body may hold that the visitor does not report: `SELECT ... INTO`
/// (creates a table), `TABLE name` (a table the parser keeps as plain strings) and `MERGE`.
fn check_set_expression(body: &SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => Err(not_allowed(
            "SELECT ... INTO is not allowed; use CREATE TABLE ... AS SELECT",
        )),
        SetExpr::SetOperation { left, right, .. } => {
            // Set operations chain to the left; walk that side in a loop, not by recursion.
            let mut pending = vec![&**left, &**right];
            while let Some(part) = pending.pop() {
                match part {
                    SetExpr::SetOperation { left, right, .. } => {
                        pending.push(left);
                        pending.push(right);
                    }
                    other => check_set_expression(other)?,
                }
            }
            Ok(())
        }
        SetExpr::Table(table) => Err(not_allowed(format!(
            "{table} is not allowed; use SELECT * FROM"
        ))),
        SetExpr::Merge(_) => Err(not_allowed(format!(
            "MERGE is not allowed; a plugin may run {ALLOWED_STATEMENTS}"
        ))),
        SetExpr::Select(_)
        | SetExpr::Query(_)
        | SetExpr::Values(_)
        | SetExpr::Insert(_)
        | SetExpr::Update(_)
        | SetExpr::Delete(_) => Ok(()),
    }
}

/// Refuses the parts of a table reference PostgreSQL does not have or that reach elsewhere.
fn check_plain_table_factor(factor: &TableFactor) -> Result<()> {
    if let TableFactor::Derived {
        sample: Some(_), ..
    } = factor
    {
        return Err(not_allowed("TABLESAMPLE is not allowed"));
    }
    let TableFactor::Table {
        with_hints,
        version,
        partitions,
        json_path,
        sample,
        index_hints,
        ..
    } = factor
    else {
        return Ok(());
    };
    if sample.is_some() {
        return Err(not_allowed("TABLESAMPLE is not allowed"));
    }
    if !with_hints.is_empty()
        || version.is_some()
        || !partitions.is_empty()
        || json_path.is_some()
        || !index_hints.is_empty()
    {
        return Err(not_allowed(format!(
            "this table reference is not allowed: {factor}"
        )));
    }
    Ok(())
}

/// The one identifier of an unqualified name; schema- or catalog-qualified names are refused.
fn single_identifier<'n>(name: &'n ObjectName, what: &str) -> Result<&'n Ident> {
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
fn folded(ident: &Ident) -> Cow<'_, str> {
    if ident.quote_style.is_none() && ident.value.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(ident.value.to_ascii_lowercase())
    } else {
        Cow::Borrowed(&ident.value)
    }
}

fn alias_for(written: Ident) -> TableAlias {
    TableAlias {
        explicit: true,
        name: written,
        columns: Vec::new(),
    }
}

fn check_function_name(name: &ObjectName) -> Result<()> {
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

fn refuse_cascade(behavior: &Option<DropBehavior>, statement: &str) -> Result<()> {
    match behavior {
        Some(DropBehavior::Cascade) => Err(cascade_refused(statement)),
        _ => Ok(()),
    }
}

fn cascade_refused(statement: &str) -> Error {
    not_allowed(format!(
        "{statement} ... CASCADE is not allowed: it changes objects outside the named tables"
    ))
}

/// A short name for a refused statement, from its leading keywords: `COPY`, `CREATE FUNCTION`,
/// `GRANT`, `SET`, `START TRANSACTION`.
fn statement_label(statement: &Statement) -> String {
    const MODIFIERS: &[&str] = &[
        "OR",
        "REPLACE",
        "TEMPORARY",
        "TEMP",
        "UNIQUE",
        "MATERIALIZED",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "SECURE",
        "EXTERNAL",
        "IF",
        "NOT",
        "EXISTS",
    ];
    let text = statement.to_string();
    let mut keywords = text.split_whitespace().take_while(|word| {
        word.bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte == b'_')
    });
    let Some(first) = keywords.next() else {
        return "this statement".to_string();
    };
    match first {
        "CREATE" | "ALTER" | "DROP" | "START" => {
            match keywords.find(|word| !MODIFIERS.contains(word)) {
                Some(object) => format!("{first} {object}"),
                None => first.to_string(),
            }
        }
        _ => first.to_string(),
    }
}

/// First keywords of statement kinds the guard refuses whatever follows them.
const REFUSED_FIRST_KEYWORDS: [&str; 41] = [
    "ABORT",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "DEALLOCATE",
    "DECLARE",
    "DISCARD",
    "DO",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SET",
    "SHOW",
    "START",
    "UNLISTEN",
    "VACUUM",
];

/// SQL the parser cannot read: a statement of a refused kind (`DO`, `LOCK`, …) is refused as
/// such; otherwise it is a syntax error, reported as PostgreSQL would (SQLSTATE 42601).
fn syntax_error(sql: &str, error: ParserError) -> Error {
    let message = match error {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
        ParserError::RecursionLimitExceeded => return not_allowed("statement nests too deeply"),
    };
    let first: String = sql
        .trim_start()
        .chars()
        .take_while(|character| character.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    if REFUSED_FIRST_KEYWORDS.contains(&first.as_str()) {
        return not_allowed(format!("{first} statements are not allowed ({message})"));
    }
    Error::Database {
        sqlstate: "42601".into(),
        message: format!("syntax error: {message}"),
    }
}

fn not_allowed(reason: impl Into<String>) -> Error {
    Error::SqlNotAllowed {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceOverrides;
    use std::collections::BTreeMap;

    const PLUGIN: &str = "shop";
    const TABLES: &[&str] = &["users", "orders", "items"];

    fn grants_for(plugin: &str, tables: &[&str]) -> ResourceGrants {
        let tables: Vec<String> = tables.iter().map(|table| table.to_string()).collect();
        ResourceGrants::resolve(plugin, &tables, &[], &[], None).expect("valid grants")
    }

    fn guard(sql: &str) -> Result<GuardedStatement> {
        guard_statement(PLUGIN, sql, &grants_for(PLUGIN, TABLES))
    }

    /// The rewritten SQL of a statement the guard must accept.
    fn rewritten(sql: &str) -> String {
        match guard(sql) {
            Ok(guarded) => guarded.sql,
            Err(error) => panic!("expected {sql:?} to pass, got {error}"),
        }
    }

    /// The reason of a statement the guard must refuse as not allowed.
    fn refused(sql: &str) -> String {
        match guard(sql) {
            Err(Error::SqlNotAllowed { reason }) => reason,
            other => panic!("expected {sql:?} to be refused, got {other:?}"),
        }
    }

    /// The table named by a statement the guard must deny.
    fn denied(sql: &str) -> String {
        match guard(sql) {
            Err(Error::TableAccessDenied { table, allowed }) => {
                assert_eq!(allowed, ["users", "orders", "items"], "for {sql:?}");
                table
            }
            other => panic!("expected {sql:?} to be denied, got {other:?}"),
        }
    }

    fn tables_of(sql: &str) -> Vec<String> {
        guard(sql).expect("statement passes").tables
    }

    #[test]
    fn select_rewrites_tables_and_adds_the_written_name_as_alias() {
        let guarded = guard("SELECT users.id, name FROM users WHERE id = $1").expect("passes");
        assert_eq!(
            guarded.sql,
            r#"SELECT users.id, name FROM "shop_users" AS users WHERE id = $1"#
        );
        assert_eq!(guarded.tables, ["users"]);
        assert_eq!(guarded.kind, StatementKind::Query);
        assert_eq!(
            rewritten("SELECT u.id FROM users u"),
            r#"SELECT u.id FROM "shop_users" u"#
        );
        assert_eq!(
            rewritten("SELECT u.id FROM users AS u (id, name)"),
            r#"SELECT u.id FROM "shop_users" AS u (id, name)"#
        );
    }

    #[test]
    fn parameters_pass_through_untouched() {
        assert_eq!(
            rewritten("SELECT $1::int, $2 FROM orders WHERE id = $3 AND total > $10"),
            r#"SELECT $1::INT, $2 FROM "shop_orders" AS orders WHERE id = $3 AND total > $10"#
        );
    }

    #[test]
    fn names_fold_like_postgresql() {
        assert_eq!(
            rewritten("SELECT * FROM Users"),
            r#"SELECT * FROM "shop_users" AS Users"#
        );
        assert_eq!(
            rewritten(r#"SELECT * FROM "users""#),
            r#"SELECT * FROM "shop_users" AS "users""#
        );
        assert_eq!(denied(r#"SELECT * FROM "Users""#), "Users");
        assert_eq!(denied("SELECT * FROM SECRETS"), "secrets");
    }

    #[test]
    fn a_plugin_name_with_a_dash_gives_a_quoted_identifier() {
        let grants = grants_for("order-svc", &["users"]);
        let guarded = guard_statement("order-svc", "SELECT * FROM users", &grants).expect("passes");
        assert_eq!(guarded.sql, r#"SELECT * FROM "order-svc_users" AS users"#);
        // The rewritten statement parses again, with the quoted name as one identifier.
        let reparsed = Parser::parse_sql(&PostgreSqlDialect {}, &guarded.sql).expect("parses");
        assert_eq!(reparsed[0].to_string(), guarded.sql);
        let guarded = guard_statement("order-svc", "CREATE INDEX by_name ON users (name)", &grants)
            .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"CREATE INDEX "order-svc_by_name" ON "order-svc_users"(name)"#
        );
    }

    #[test]
    fn shared_tables_rewrite_to_the_shared_physical_name() {
        let overrides = ResourceOverrides {
            table_name_map: BTreeMap::from([("users".to_string(), "shared:users".to_string())]),
            ..ResourceOverrides::default()
        };
        let grants =
            ResourceGrants::resolve(PLUGIN, &["users".to_string()], &[], &[], Some(&overrides))
                .expect("valid grants");
        let guarded = guard_statement(PLUGIN, "SELECT * FROM users", &grants).expect("passes");
        assert_eq!(guarded.sql, r#"SELECT * FROM "shared_users" AS users"#);
    }

    #[test]
    fn joins_check_and_rewrite_every_table() {
        let guarded = guard(
            "SELECT * FROM users JOIN orders ON orders.user_id = users.id \
             LEFT JOIN items i ON i.order_id = orders.id CROSS JOIN users AS other",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"SELECT * FROM "shop_users" AS users JOIN "shop_orders" AS orders ON orders.user_id = users.id LEFT JOIN "shop_items" i ON i.order_id = orders.id CROSS JOIN "shop_users" AS other"#
        );
        assert_eq!(guarded.tables, ["items", "orders", "users"]);
        assert_eq!(
            denied("SELECT * FROM users JOIN secrets ON secrets.id = users.id"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT * FROM users, (orders JOIN payments USING (id))"),
            "payments"
        );
    }

    #[test]
    fn subqueries_anywhere_are_checked() {
        assert_eq!(
            rewritten(
                "SELECT (SELECT count(*) FROM orders WHERE orders.user_id = users.id) AS n \
                 FROM users WHERE id IN (SELECT user_id FROM items) \
                 AND EXISTS (SELECT 1 FROM orders)"
            ),
            r#"SELECT (SELECT count(*) FROM "shop_orders" AS orders WHERE orders.user_id = users.id) AS n FROM "shop_users" AS users WHERE id IN (SELECT user_id FROM "shop_items" AS items) AND EXISTS (SELECT 1 FROM "shop_orders" AS orders)"#
        );
        assert_eq!(
            denied("SELECT * FROM users WHERE id IN (SELECT user_id FROM secrets)"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT * FROM users WHERE EXISTS (SELECT 1 FROM secrets)"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT (SELECT max(id) FROM secrets) FROM users"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT * FROM users u, LATERAL (SELECT * FROM secrets s WHERE s.id = u.id) x"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT * FROM (SELECT * FROM (SELECT * FROM secrets) a) b"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT coalesce((SELECT 1 FROM secrets), 0)"),
            "secrets"
        );
        assert_eq!(
            denied("SELECT * FROM users ORDER BY (SELECT 1 FROM secrets)"),
            "secrets"
        );
        assert_eq!(
            denied(
                "SELECT count(*) FROM users GROUP BY id HAVING count(*) > (SELECT 1 FROM secrets)"
            ),
            "secrets"
        );
    }

    #[test]
    fn set_operations_and_values_are_queries() {
        let guarded = guard(
            "SELECT id FROM users UNION ALL SELECT id FROM orders EXCEPT SELECT id FROM items",
        )
        .expect("passes");
        assert_eq!(guarded.kind, StatementKind::Query);
        assert_eq!(guarded.tables, ["items", "orders", "users"]);
        assert_eq!(
            denied("SELECT id FROM users UNION SELECT id FROM orders UNION SELECT id FROM secrets"),
            "secrets"
        );
        let values = guard("VALUES (1, 'a'), ($1, $2)").expect("passes");
        assert_eq!(values.kind, StatementKind::Query);
        assert!(values.tables.is_empty());
    }

    #[test]
    fn cte_names_are_not_tables() {
        let guarded = guard(
            "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
             SELECT * FROM recent JOIN users ON users.id = recent.user_id",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"WITH recent AS (SELECT * FROM "shop_orders" AS orders WHERE created_at > now() - INTERVAL '1 day') SELECT * FROM "recent" JOIN "shop_users" AS users ON users.id = recent.user_id"#
        );
        assert_eq!(guarded.tables, ["orders", "users"]);
        // A WITH item may carry the name of a table the plugin may not use.
        assert!(tables_of("WITH secrets AS (SELECT 1 AS id) SELECT * FROM secrets").is_empty());
        assert_eq!(
            denied("WITH recent AS (SELECT * FROM secrets) SELECT * FROM recent"),
            "secrets"
        );
        // Later items see earlier ones without RECURSIVE.
        assert_eq!(
            tables_of("WITH a AS (SELECT * FROM users), b AS (SELECT * FROM a) SELECT * FROM b"),
            ["users"]
        );
    }

    #[test]
    fn a_cte_shadowing_a_granted_table_is_the_cte() {
        let guarded = guard("WITH users AS (SELECT 1 AS id) SELECT * FROM users").expect("passes");
        assert_eq!(
            guarded.sql,
            r#"WITH users AS (SELECT 1 AS id) SELECT * FROM "users""#
        );
        assert!(guarded.tables.is_empty());
        // Inside its own body a non-recursive item does not see itself: that is the table.
        assert_eq!(
            rewritten("WITH users AS (SELECT * FROM users WHERE active) SELECT * FROM users"),
            r#"WITH users AS (SELECT * FROM "shop_users" AS users WHERE active) SELECT * FROM "users""#
        );
    }

    #[test]
    fn cte_references_are_printed_as_the_name_postgresql_must_read() {
        // The parser takes `ONLY secrets` as a table `ONLY` aliased `secrets`; PostgreSQL would
        // read the table `secrets`. As a table, `ONLY` is checked (and quoted when granted) ...
        assert_eq!(denied("SELECT * FROM ONLY secrets"), "only");
        // ... and as a WITH item it is printed quoted, so it stays the WITH item.
        assert_eq!(
            rewritten(r#"WITH "only" AS (SELECT 1) SELECT * FROM ONLY secrets"#),
            r#"WITH "only" AS (SELECT 1) SELECT * FROM "only" secrets"#
        );
        assert_eq!(
            rewritten("WITH Recent AS (SELECT 1) SELECT * FROM RECENT"),
            r#"WITH Recent AS (SELECT 1) SELECT * FROM "recent""#
        );
    }

    #[test]
    fn cte_scopes_follow_postgresql() {
        // An item does not see the items declared after it (without RECURSIVE).
        assert_eq!(
            denied("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a"),
            "b"
        );
        // A WITH inside a subquery ends with it.
        assert_eq!(
            denied("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x"),
            "x"
        );
        // Outer items are visible in nested queries and in the bodies of inner WITH items.
        assert_eq!(
            tables_of(
                "WITH x AS (SELECT * FROM users) \
                 SELECT * FROM (WITH y AS (SELECT * FROM x) SELECT * FROM y, x) s \
                 WHERE EXISTS (SELECT 1 FROM x)"
            ),
            ["users"]
        );
    }

    #[test]
    fn recursive_ctes_see_themselves() {
        let guarded = guard(
            "WITH RECURSIVE tree(id, parent_id) AS (\
               SELECT id, parent_id FROM items WHERE parent_id IS NULL \
               UNION ALL \
               SELECT i.id, i.parent_id FROM items i JOIN tree t ON i.parent_id = t.id) \
             SELECT * FROM tree",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"WITH RECURSIVE tree (id, parent_id) AS (SELECT id, parent_id FROM "shop_items" AS items WHERE parent_id IS NULL UNION ALL SELECT i.id, i.parent_id FROM "shop_items" i JOIN "tree" t ON i.parent_id = t.id) SELECT * FROM "tree""#
        );
        assert_eq!(guarded.tables, ["items"]);
        // With RECURSIVE an item sees the items after it too.
        assert!(tables_of(
            "WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a"
        )
        .is_empty());
        assert_eq!(
            denied(
                "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t, secrets) SELECT * FROM t"
            ),
            "secrets"
        );
    }

    #[test]
    fn data_modifying_ctes_are_checked_and_their_targets_are_tables() {
        let guarded = guard(
            "WITH moved AS (DELETE FROM orders WHERE done RETURNING *) \
             INSERT INTO items SELECT * FROM moved",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"WITH moved AS (DELETE FROM "shop_orders" AS orders WHERE done RETURNING *) INSERT INTO "shop_items" AS items SELECT * FROM "moved""#
        );
        assert_eq!(guarded.kind, StatementKind::Command);
        assert_eq!(guarded.tables, ["items", "orders"]);
        let query =
            guard("WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone")
                .expect("passes");
        assert_eq!(query.kind, StatementKind::Query);
        // The target of UPDATE, DELETE and INSERT is always a table, even with a WITH item of
        // the same name, as in PostgreSQL.
        assert_eq!(
            rewritten("WITH users AS (SELECT 1 AS id) UPDATE users SET name = 'x' FROM users u2"),
            r#"WITH users AS (SELECT 1 AS id) UPDATE "shop_users" AS users SET name = 'x' FROM "users" u2"#
        );
        assert_eq!(
            denied("WITH secrets AS (SELECT 1) DELETE FROM secrets"),
            "secrets"
        );
        assert_eq!(
            denied("WITH x AS (UPDATE secrets SET a = 1 RETURNING *) SELECT * FROM x"),
            "secrets"
        );
        assert_eq!(
            denied("WITH x AS (INSERT INTO secrets VALUES (1) RETURNING *) SELECT * FROM x"),
            "secrets"
        );
    }

    #[test]
    fn insert_forms_are_rewritten() {
        let guarded = guard(
            "INSERT INTO users (id, name) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE users.name <> EXCLUDED.name \
             RETURNING id",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"INSERT INTO "shop_users" AS users (id, name) VALUES ($1, $2) ON CONFLICT(id) DO UPDATE SET name = EXCLUDED.name WHERE users.name <> EXCLUDED.name RETURNING id"#
        );
        assert_eq!(guarded.kind, StatementKind::Command);
        assert_eq!(
            rewritten("INSERT INTO users AS u (id) VALUES (1) ON CONFLICT DO NOTHING"),
            r#"INSERT INTO "shop_users" AS u (id) VALUES (1) ON CONFLICT DO NOTHING"#
        );
        assert_eq!(
            rewritten(
                "INSERT INTO users (id) VALUES (1) ON CONFLICT ON CONSTRAINT users_pkey DO NOTHING"
            ),
            r#"INSERT INTO "shop_users" AS users (id) VALUES (1) ON CONFLICT ON CONSTRAINT "shop_users_pkey" DO NOTHING"#
        );
        assert_eq!(
            tables_of("INSERT INTO items (id) SELECT id FROM orders WHERE id > $1"),
            ["items", "orders"]
        );
    }

    #[test]
    fn insert_from_or_into_a_denied_table_is_denied() {
        assert_eq!(denied("INSERT INTO items SELECT * FROM secrets"), "secrets");
        assert_eq!(denied("INSERT INTO secrets (id) VALUES (1)"), "secrets");
        assert_eq!(
            denied("INSERT INTO items (id) VALUES ((SELECT max(id) FROM secrets))"),
            "secrets"
        );
        assert_eq!(
            denied("INSERT INTO users (id) VALUES (1) RETURNING (SELECT 1 FROM secrets)"),
            "secrets"
        );
    }

    #[test]
    fn update_with_from_is_checked() {
        let guarded = guard(
            "UPDATE orders SET total = items.price FROM items \
             WHERE items.order_id = orders.id RETURNING orders.*",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"UPDATE "shop_orders" AS orders SET total = items.price FROM "shop_items" AS items WHERE items.order_id = orders.id RETURNING orders.*"#
        );
        assert_eq!(guarded.tables, ["items", "orders"]);
        assert_eq!(
            denied("UPDATE orders SET total = 0 FROM secrets WHERE secrets.id = orders.id"),
            "secrets"
        );
        assert_eq!(denied("UPDATE secrets SET a = 1"), "secrets");
        assert_eq!(
            denied("UPDATE orders SET total = (SELECT max(x) FROM secrets)"),
            "secrets"
        );
        assert_eq!(
            rewritten("UPDATE users u SET name = $1 WHERE u.id = $2"),
            r#"UPDATE "shop_users" u SET name = $1 WHERE u.id = $2"#
        );
    }

    #[test]
    fn delete_with_using_is_checked() {
        let guarded = guard(
            "DELETE FROM orders USING users WHERE users.id = orders.user_id AND users.banned",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"DELETE FROM "shop_orders" AS orders USING "shop_users" AS users WHERE users.id = orders.user_id AND users.banned"#
        );
        assert_eq!(guarded.tables, ["orders", "users"]);
        assert_eq!(
            denied("DELETE FROM orders USING secrets WHERE secrets.id = orders.id"),
            "secrets"
        );
        assert_eq!(denied("DELETE FROM secrets"), "secrets");
        assert_eq!(
            denied("DELETE FROM orders WHERE id IN (SELECT id FROM secrets)"),
            "secrets"
        );
    }

    #[test]
    fn create_table_rewrites_the_table_references_and_constraint_names() {
        let guarded = guard(
            "CREATE TABLE IF NOT EXISTS items (\
               id serial PRIMARY KEY, \
               order_id int NOT NULL REFERENCES orders (id) ON DELETE CASCADE, \
               created_at timestamptz DEFAULT now(), \
               sku text CONSTRAINT sku_unique UNIQUE, \
               CONSTRAINT positive CHECK (id > 0), \
               FOREIGN KEY (order_id) REFERENCES orders (id))",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"CREATE TABLE IF NOT EXISTS "shop_items" (id serial PRIMARY KEY, order_id INT NOT NULL REFERENCES "shop_orders" (id) ON DELETE CASCADE, created_at TIMESTAMPTZ DEFAULT now(), sku TEXT CONSTRAINT "shop_sku_unique" UNIQUE, CONSTRAINT "shop_positive" CHECK (id > 0), FOREIGN KEY (order_id) REFERENCES "shop_orders"(id))"#
        );
        assert_eq!(guarded.tables, ["items", "orders"]);
        assert_eq!(guarded.kind, StatementKind::Command);
        // A table may reference itself.
        assert_eq!(
            tables_of("CREATE TABLE users (id int PRIMARY KEY, parent int REFERENCES users (id))"),
            ["users"]
        );
    }

    #[test]
    fn create_table_with_a_denied_reference_or_source_is_denied() {
        assert_eq!(
            denied("CREATE TABLE items (id int, owner int REFERENCES secrets (id))"),
            "secrets"
        );
        assert_eq!(
            denied("CREATE TABLE items (id int, FOREIGN KEY (id) REFERENCES secrets (id))"),
            "secrets"
        );
        assert_eq!(denied("CREATE TABLE secrets (id int)"), "secrets");
        assert_eq!(
            denied("CREATE TABLE items AS SELECT * FROM secrets"),
            "secrets"
        );
        assert_eq!(
            rewritten("CREATE TABLE items AS SELECT id FROM orders"),
            r#"CREATE TABLE "shop_items" AS SELECT id FROM "shop_orders" AS orders"#
        );
    }

    #[test]
    fn create_table_refuses_what_reaches_other_tables_or_sessions() {
        assert!(refused("CREATE TEMP TABLE items (id int)").contains("temporary"));
        assert!(refused("CREATE TABLE items (LIKE orders)").contains("LIKE"));
        assert!(refused("CREATE TABLE items (id int, like secrets)").contains("LIKE"));
        assert!(refused("ALTER TABLE items ADD like secrets").contains("LIKE"));
        assert!(refused("CREATE TABLE items () INHERITS (orders)").contains("INHERITS"));
        assert!(
            refused("CREATE TABLE items (id int DEFAULT nextval('seq'))")
                .contains("function 'nextval'")
        );
        assert!(
            refused("CREATE TABLE items (id int, CHECK (pg_read_file('x') <> ''))")
                .contains("function 'pg_read_file'")
        );
        assert!(
            refused(r#"CREATE TABLE items (id int CONSTRAINT "Bad" CHECK (id > 0))"#)
                .contains("constraint name 'Bad' is not valid")
        );
    }

    #[test]
    fn alter_table_is_checked() {
        assert_eq!(
            rewritten(
                "ALTER TABLE IF EXISTS orders ADD COLUMN item_id int REFERENCES items (id), \
                 ALTER COLUMN total SET DEFAULT 0, RENAME COLUMN a TO b, DROP COLUMN c, \
                 ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id), \
                 DROP CONSTRAINT old_check"
            ),
            r#"ALTER TABLE IF EXISTS "shop_orders" ADD COLUMN item_id INT REFERENCES "shop_items" (id), ALTER COLUMN total SET DEFAULT 0, RENAME COLUMN a TO b, DROP COLUMN c, ADD CONSTRAINT "shop_fk_user" FOREIGN KEY (user_id) REFERENCES "shop_users"(id), DROP CONSTRAINT "shop_old_check""#
        );
        assert_eq!(
            tables_of("ALTER TABLE orders RENAME TO items"),
            ["items", "orders"]
        );
        assert_eq!(
            rewritten("ALTER TABLE orders RENAME TO items"),
            r#"ALTER TABLE "shop_orders" RENAME TO "shop_items""#
        );
        assert_eq!(denied("ALTER TABLE orders RENAME TO secrets"), "secrets");
        assert_eq!(denied("ALTER TABLE secrets ADD COLUMN x int"), "secrets");
        assert_eq!(
            denied("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (x) REFERENCES secrets (id)"),
            "secrets"
        );
        assert!(refused("ALTER TABLE orders OWNER TO postgres").contains("OWNER TO"));
        assert!(refused("ALTER TABLE orders ENABLE ROW LEVEL SECURITY").contains("not allowed"));
        assert!(refused("ALTER TABLE orders DROP COLUMN c CASCADE").contains("CASCADE"));
        assert!(refused("ALTER TABLE orders DROP CONSTRAINT c CASCADE").contains("CASCADE"));
        assert!(
            refused("ALTER TABLE orders ALTER COLUMN c SET DEFAULT current_setting('x')")
                .contains("function 'current_setting'")
        );
    }

    #[test]
    fn drop_table_checks_every_name() {
        let guarded = guard("DROP TABLE IF EXISTS orders, items").expect("passes");
        assert_eq!(
            guarded.sql,
            r#"DROP TABLE IF EXISTS "shop_orders", "shop_items""#
        );
        assert_eq!(guarded.tables, ["items", "orders"]);
        assert_eq!(denied("DROP TABLE orders, secrets, items"), "secrets");
        assert!(refused("DROP TABLE orders CASCADE").contains("CASCADE"));
        assert!(refused("DROP TABLE public.orders").contains("schema-qualified"));
    }

    #[test]
    fn index_names_are_prefixed_like_tables() {
        let guarded = guard(
            "CREATE UNIQUE INDEX IF NOT EXISTS by_email ON users (lower(email)) WHERE active",
        )
        .expect("passes");
        assert_eq!(
            guarded.sql,
            r#"CREATE UNIQUE INDEX IF NOT EXISTS "shop_by_email" ON "shop_users"(lower(email)) WHERE active"#
        );
        assert_eq!(guarded.tables, ["users"]);
        assert_eq!(
            rewritten("CREATE INDEX ON orders (user_id)"),
            r#"CREATE INDEX ON "shop_orders"(user_id)"#
        );
        assert_eq!(denied("CREATE INDEX by_x ON secrets (x)"), "secrets");
        assert!(refused("CREATE INDEX public.by_x ON users (x)").contains("schema-qualified"));
        assert!(refused(r#"CREATE INDEX "ByX" ON users (x)"#).contains("index name 'ByX'"));
        assert!(refused("CREATE INDEX by_x ON users (pg_read_file(x))")
            .contains("function 'pg_read_file'"));
        let dropped = guard("DROP INDEX IF EXISTS by_email, users_email_idx").expect("passes");
        assert_eq!(
            dropped.sql,
            r#"DROP INDEX IF EXISTS "shop_by_email", "shop_users_email_idx""#
        );
        assert!(dropped.tables.is_empty());
        assert!(refused("DROP INDEX by_email CASCADE").contains("CASCADE"));
    }

    #[test]
    fn truncate_checks_every_table() {
        let guarded = guard("TRUNCATE TABLE orders, items RESTART IDENTITY").expect("passes");
        assert_eq!(
            guarded.sql,
            r#"TRUNCATE TABLE "shop_orders", "shop_items" RESTART IDENTITY"#
        );
        assert_eq!(guarded.tables, ["items", "orders"]);
        assert_eq!(denied("TRUNCATE orders, secrets"), "secrets");
        assert!(refused("TRUNCATE orders CASCADE").contains("CASCADE"));
    }

    #[test]
    fn other_statement_kinds_are_refused() {
        let cases = [
            ("COPY users TO '/tmp/users.csv'", "COPY"),
            ("COPY users FROM PROGRAM 'id'", "COPY"),
            (
                "DO $$ BEGIN PERFORM 1; END $$",
                "DO statements are not allowed",
            ),
            (
                "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
                "CREATE FUNCTION",
            ),
            (
                "CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
                "CREATE FUNCTION",
            ),
            ("DROP FUNCTION f", "DROP FUNCTION"),
            (
                "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
                "CREATE TRIGGER",
            ),
            ("CREATE VIEW v AS SELECT * FROM users", "CREATE VIEW"),
            ("DROP VIEW v", "DROP VIEW"),
            ("CREATE SCHEMA s", "CREATE SCHEMA"),
            ("DROP SCHEMA s", "DROP SCHEMA"),
            ("CREATE EXTENSION dblink", "CREATE EXTENSION"),
            ("CREATE ROLE r", "CREATE ROLE"),
            ("ALTER ROLE r SUPERUSER", "ALTER ROLE"),
            ("CREATE USER u", "CREATE USER"),
            ("CREATE DATABASE d", "CREATE DATABASE"),
            ("CREATE SEQUENCE s", "CREATE SEQUENCE"),
            ("GRANT SELECT ON users TO public", "GRANT"),
            ("REVOKE ALL ON users FROM public", "REVOKE"),
            ("SET search_path = public", "SET"),
            ("SET ROLE postgres", "SET"),
            ("RESET search_path", "RESET"),
            ("SHOW search_path", "SHOW"),
            ("CALL p()", "CALL"),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("EXECUTE p", "EXECUTE"),
            ("DEALLOCATE p", "DEALLOCATE"),
            ("LISTEN c", "LISTEN"),
            ("NOTIFY c", "NOTIFY"),
            ("VACUUM users", "VACUUM"),
            ("ANALYZE users", "ANALYZE"),
            ("LOCK TABLE users", "LOCK statements are not allowed"),
            ("BEGIN", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("COMMIT", "COMMIT"),
            ("ROLLBACK", "ROLLBACK"),
            ("SAVEPOINT s", "SAVEPOINT"),
            ("EXPLAIN SELECT * FROM users", "EXPLAIN"),
            ("EXPLAIN ANALYZE DELETE FROM users", "EXPLAIN"),
            ("DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
            ("DISCARD ALL", "DISCARD"),
            ("COMMENT ON TABLE users IS 'x'", "COMMENT"),
            (
                "MERGE INTO users USING orders ON true WHEN MATCHED THEN DELETE",
                "MERGE",
            ),
        ];
        for (sql, expected) in cases {
            let reason = refused(sql);
            assert!(
                reason.contains(expected),
                "{sql:?} was refused with {reason:?}, which does not name {expected:?}"
            );
        }
        assert_eq!(
            refused("GRANT SELECT ON users TO public"),
            "GRANT is not allowed; a plugin may run SELECT, INSERT, UPDATE, DELETE, \
             CREATE/ALTER/DROP TABLE, CREATE/DROP INDEX and TRUNCATE"
        );
    }

    #[test]
    fn select_into_and_table_are_refused() {
        assert!(refused("SELECT * INTO copy FROM users").contains("SELECT ... INTO"));
        assert!(refused("SELECT 1 UNION SELECT * INTO copy FROM users").contains("INTO"));
    }

    #[test]
    fn locking_clauses_are_allowed() {
        assert_eq!(
            rewritten("SELECT * FROM orders WHERE id = $1 FOR UPDATE OF orders SKIP LOCKED"),
            r#"SELECT * FROM "shop_orders" AS orders WHERE id = $1 FOR UPDATE OF orders SKIP LOCKED"#
        );
    }

    #[test]
    fn schema_qualified_names_are_refused() {
        for sql in [
            "SELECT * FROM public.users",
            "SELECT * FROM pg_catalog.pg_user",
            "SELECT * FROM db.s.t",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM users WHERE id IN (SELECT id FROM public.orders)",
            "INSERT INTO public.users (id) VALUES (1)",
            "UPDATE public.users SET a = 1",
            "DELETE FROM public.users",
            "CREATE TABLE public.items (id int)",
            "CREATE TABLE items (id int REFERENCES public.users (id))",
            "ALTER TABLE public.users ADD COLUMN x int",
            "TRUNCATE public.users",
        ] {
            assert!(
                refused(sql).contains("schema-qualified name"),
                "{sql:?} should be refused as schema-qualified"
            );
        }
        assert!(refused("SELECT pg_catalog.now()").contains("qualified function name"));
    }

    #[test]
    fn system_catalogs_are_just_tables_the_plugin_was_not_granted() {
        assert_eq!(denied("SELECT * FROM pg_user"), "pg_user");
        assert_eq!(denied("SELECT usename, passwd FROM pg_shadow"), "pg_shadow");
        assert_eq!(denied("SELECT * FROM pg_class"), "pg_class");
    }

    #[test]
    fn forbidden_functions_are_refused() {
        for function in [
            "pg_read_file('/etc/passwd')",
            "pg_read_binary_file('/etc/passwd')",
            "pg_ls_dir('.')",
            "dblink('host=x', 'select 1')",
            "lo_import('/etc/passwd')",
            "lo_export(1, '/tmp/x')",
            "current_setting('data_directory')",
            "set_config('search_path', 'public', false)",
            "query_to_xml('select * from pg_shadow', true, true, '')",
            "pg_sleep(10)",
            "nextval('seq')",
            "txid_current()",
            "version()",
            "pg_terminate_backend(1)",
            "current_user",
            "session_user",
        ] {
            let name = function.split('(').next().expect("a name");
            let reason = refused(&format!("SELECT {function} FROM users"));
            assert_eq!(reason, format!("function '{name}' is not allowed"));
        }
        // Functions are checked wherever they appear.
        assert!(
            refused("SELECT * FROM users WHERE name = pg_read_file('x')").contains("pg_read_file")
        );
        assert!(
            refused("SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM users")
                .contains("pg_sleep")
        );
        assert!(refused("INSERT INTO users (name) VALUES (version())").contains("version"));
        assert!(refused("UPDATE users SET name = current_setting('x')").contains("current_setting"));
        assert!(refused("SELECT * FROM pg_ls_dir('.')").contains("function 'pg_ls_dir'"));
        assert!(
            refused("SELECT * FROM users, LATERAL pg_ls_dir(users.name)").contains("pg_ls_dir")
        );
        assert!(refused(r#"SELECT "PG_SLEEP"(1)"#).contains("function 'PG_SLEEP'"));
        assert!(refused("SELECT 1 OPERATOR(pg_catalog.+) 2").contains("OPERATOR"));
    }

    #[test]
    fn allowed_functions_pass() {
        let guarded = guard(
            "SELECT count(*), COALESCE(max(total), 0), lower(name), jsonb_build_object('id', id), \
             date_trunc('day', now()), row_number() OVER (ORDER BY id), gen_random_uuid(), \
             EXTRACT(YEAR FROM CURRENT_TIMESTAMP), SUBSTRING(name FROM 1 FOR 2), TRIM(name), \
             CAST(id AS text), CEIL(total), FLOOR(total), POSITION('a' IN name), \
             ARRAY(SELECT id FROM items), ROW(1, 2), current_date, localtime \
             FROM orders GROUP BY id, name, total",
        )
        .expect("passes");
        assert_eq!(guarded.tables, ["items", "orders"]);
        assert_eq!(
            rewritten("SELECT * FROM generate_series(1, $1) AS g(n)"),
            "SELECT * FROM generate_series(1, $1) AS g (n)"
        );
        assert_eq!(
            tables_of("SELECT e.key FROM users, jsonb_each(users.data) e"),
            ["users"]
        );
        assert_eq!(
            tables_of("SELECT * FROM orders, unnest(orders.tags) AS t(tag)"),
            ["orders"]
        );
        assert_eq!(
            tables_of("SELECT * FROM users u, LATERAL generate_series(1, u.n) g"),
            ["users"]
        );
    }

    #[test]
    fn exactly_one_statement_is_allowed() {
        assert_eq!(
            refused("SELECT * FROM users; DROP TABLE users"),
            "only one statement per call, found 2"
        );
        assert_eq!(
            refused("SELECT 1; SELECT 2; SELECT 3"),
            "only one statement per call, found 3"
        );
        assert_eq!(refused(""), "no statement to run");
        assert_eq!(refused("  ;  "), "no statement to run");
        assert!(guard("SELECT * FROM users;").is_ok());
    }

    #[test]
    fn syntax_errors_are_database_errors_with_sqlstate_42601() {
        for sql in [
            "SELECT * FROM users WHERE",
            "SELECT 'unterminated",
            "INSERT INTO users VALUES (",
        ] {
            match guard(sql) {
                Err(Error::Database { sqlstate, message }) => {
                    assert_eq!(sqlstate, "42601", "{sql}");
                    assert!(message.starts_with("syntax error: "), "{message}");
                }
                other => panic!("expected a syntax error for {sql:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unparseable_statements_of_refused_kinds_are_refused() {
        let reason = refused("DO $$ BEGIN PERFORM 1; END $$");
        assert!(
            reason.starts_with("DO statements are not allowed"),
            "{reason}"
        );
        assert!(refused("lock table users").starts_with("LOCK statements are not allowed"));
    }

    #[test]
    fn oversized_and_overly_nested_statements_are_refused() {
        let long = format!(
            "SELECT 1 FROM users WHERE name = '{}'",
            "x".repeat(MAX_STATEMENT_BYTES)
        );
        assert!(refused(&long).contains("byte limit"));
        let deep = format!(
            "SELECT 1{} FROM users",
            "+1".repeat(MAX_EXPRESSION_DEPTH + 10)
        );
        assert!(refused(&deep).contains("levels deep"));
        let fine = format!("SELECT 1{} FROM users", "+1".repeat(100));
        assert_eq!(tables_of(&fine), ["users"]);
    }

    #[test]
    fn refusals_carry_the_right_error_kind_and_message() {
        let error = guard("SELECT * FROM secrets").expect_err("denied");
        assert_eq!(error.js_name(), "TableAccessDeniedError");
        assert_eq!(
            error.to_string(),
            "table 'secrets' is not allowed; allowed tables: [users, orders, items]"
        );
        let error = guard("COPY users TO '/tmp/x'").expect_err("refused");
        assert_eq!(error.js_name(), "SqlNotAllowedError");
        assert!(error
            .to_string()
            .starts_with("sql not allowed: COPY is not allowed"));
    }

    #[test]
    fn a_plugin_without_tables_can_still_compute() {
        let grants = grants_for(PLUGIN, &[]);
        let guarded = guard_statement(PLUGIN, "SELECT now(), $1::text", &grants).expect("passes");
        assert!(guarded.tables.is_empty());
        match guard_statement(PLUGIN, "SELECT * FROM users", &grants) {
            Err(Error::TableAccessDenied { table, allowed }) => {
                assert_eq!(table, "users");
                assert!(allowed.is_empty());
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn nesting_that_would_make_parsing_slow_is_refused_before_parsing() {
        let deep_position = format!("SELECT {}1 FROM users", "POSITION(".repeat(12));
        assert!(refused(&deep_position).contains("too complex"));
        let deep_cast = format!("SELECT {}1", "CAST(".repeat(20));
        assert!(refused(&deep_cast).contains("too complex"));
        let deep_case = format!("SELECT {}1", "CASE WHEN 1 THEN ".repeat(20));
        assert!(refused(&deep_case).contains("too complex"));
        // Plain function calls, brackets and CASEs side by side cost nothing extra.
        let nested_calls = format!("SELECT {}1{} FROM users", "lower(".repeat(8), ")".repeat(8));
        assert_eq!(tables_of(&nested_calls), ["users"]);
        let many_cases = format!(
            "SELECT {} FROM users",
            vec!["CASE WHEN id > 0 THEN CAST(id AS text) ELSE 'none' END"; 200].join(", ")
        );
        assert_eq!(tables_of(&many_cases), ["users"]);
        let concatenated_cases = format!(
            "SELECT {} FROM users",
            vec!["CASE WHEN id > 0 THEN 'a' END"; 100].join(" || ")
        );
        assert_eq!(tables_of(&concatenated_cases), ["users"]);
        let bulk_insert = format!(
            "INSERT INTO items (id, name) VALUES {}",
            vec!["(CAST($1 AS int), TRIM($2))"; 800].join(", ")
        );
        assert_eq!(tables_of(&bulk_insert), ["items"]);
    }

    #[test]
    fn the_guard_dialect_parses_like_postgresql() {
        let statements = [
            "SELECT count(*), coalesce(max(total), 0), lower(trim(name)) FROM orders",
            "SELECT f(a => 1, b => 'x'), CAST(x AS int), x::text, POSITION('a' IN name)",
            "SELECT SUBSTRING(name FROM 1 FOR 3), EXTRACT(YEAR FROM now()), TRIM(BOTH 'x' FROM y)",
            "SELECT CASE WHEN a THEN 1 WHEN b THEN 2 ELSE 3 END, ARRAY[1, 2], ARRAY(SELECT 1)",
            "SELECT data->>'id', data #> '{a,b}', tags @> ARRAY['x'], name ILIKE $1 FROM items",
            "SELECT * FROM users WHERE id = ANY($1) AND name !~ '^a' AND NOT EXISTS (SELECT 1)",
            "SELECT array_agg(x ORDER BY y) FILTER (WHERE z) OVER (PARTITION BY w) FROM t",
            "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT * FROM t",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a RETURNING *",
            "UPDATE t SET a = b.a FROM b WHERE b.id = t.id",
            "DELETE FROM t USING b WHERE b.id = t.id",
            "CREATE TABLE t (id serial PRIMARY KEY, data jsonb DEFAULT '{}', at timestamptz)",
            "CREATE INDEX i ON t USING gin (data jsonb_path_ops) WHERE at > now()",
            "SELECT 1 !, 2 << 1, |/ 4, E'a\\nb', $$x$$, U&'d\\0061t', 1_000",
            "SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(n, i)",
        ];
        for sql in statements {
            let printed = |dialect: &dyn Dialect| match Parser::parse_sql(dialect, sql) {
                Ok(statements) => statements[0].to_string(),
                Err(error) => panic!("{sql:?} does not parse: {error}"),
            };
            // Named arguments come out as another variant that prints the same.
            assert_eq!(
                printed(&GuardDialect(PostgreSqlDialect {})),
                printed(&PostgreSqlDialect {}),
                "for {sql:?}"
            );
        }
    }
}
