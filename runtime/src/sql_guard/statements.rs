//! What each allowed statement kind may hold: its tables, names and clauses.

use sqlparser::ast::AlterColumnOperation;

use super::*;

impl Guard<'_> {
    /// Checks a statement (the top-level one or one inside a `WITH` item) and rewrites the names
    /// it holds outside table factors and expressions.
    pub(super) fn check_statement(
        &mut self,
        statement: &mut Statement,
        nested: bool,
    ) -> Result<()> {
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
                            self.rewrite_table(name, AccessLevel::Owner)?;
                        }
                        Ok(())
                    }
                    ObjectType::Index => {
                        for name in names {
                            self.rewrite_namespaced_name(name, "index")?;
                            if let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() {
                                self.dropped_indexes.push(ident.value.clone());
                            }
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
        let written = self.rewrite_table(name, AccessLevel::Write)?;
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
        self.rewrite_table(&mut create.name, AccessLevel::Owner)?;
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
        allow_list::check_data_type(&column.data_type)?;
        for option in &mut column.options {
            self.rewrite_constraint_name(&mut option.name)?;
            match &mut option.option {
                ColumnOption::ForeignKey(foreign_key) => {
                    self.rewrite_constraint_name(&mut foreign_key.name)?;
                    self.rewrite_table(&mut foreign_key.foreign_table, AccessLevel::Owner)?;
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
                self.rewrite_table(&mut foreign_key.foreign_table, AccessLevel::Owner)?;
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
        self.rewrite_table(&mut alter.name, AccessLevel::Owner)?;
        for operation in &mut alter.operations {
            match operation {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    self.check_column(column_def)?
                }
                AlterTableOperation::DropColumn { drop_behavior, .. } => {
                    refuse_cascade(drop_behavior, "ALTER TABLE ... DROP COLUMN")?
                }
                AlterTableOperation::RenameColumn { .. } => {}
                AlterTableOperation::AlterColumn { op, .. } => {
                    if let AlterColumnOperation::SetDataType { data_type, .. } = op {
                        allow_list::check_data_type(data_type)?;
                    }
                }
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
                    self.rewrite_table(new_name, AccessLevel::Owner)?;
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
        self.rewrite_table(&mut create.table_name, AccessLevel::Owner)?;
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
            self.rewrite_table(&mut target.name, AccessLevel::Owner)?;
        }
        Ok(())
    }
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
