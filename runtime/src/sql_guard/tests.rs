//! The guard's unit tests: what passes, how it is rewritten, and what is refused.

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
        denied("SELECT count(*) FROM users GROUP BY id HAVING count(*) > (SELECT 1 FROM secrets)"),
        "secrets"
    );
}

#[test]
fn set_operations_and_values_are_queries() {
    let guarded =
        guard("SELECT id FROM users UNION ALL SELECT id FROM orders EXCEPT SELECT id FROM items")
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
    assert!(
        tables_of("WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a")
            .is_empty()
    );
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
    let query = guard("WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone")
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
    let guarded =
        guard("DELETE FROM orders USING users WHERE users.id = orders.user_id AND users.banned")
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
    let guarded =
        guard("CREATE UNIQUE INDEX IF NOT EXISTS by_email ON users (lower(email)) WHERE active")
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
    assert!(
        refused("CREATE INDEX by_x ON users (pg_read_file(x))").contains("function 'pg_read_file'")
    );
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
    assert!(refused("SELECT * FROM users WHERE name = pg_read_file('x')").contains("pg_read_file"));
    assert!(
        refused("SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM users")
            .contains("pg_sleep")
    );
    assert!(refused("INSERT INTO users (name) VALUES (version())").contains("version"));
    assert!(refused("UPDATE users SET name = current_setting('x')").contains("current_setting"));
    assert!(refused("SELECT * FROM pg_ls_dir('.')").contains("function 'pg_ls_dir'"));
    assert!(refused("SELECT * FROM users, LATERAL pg_ls_dir(users.name)").contains("pg_ls_dir"));
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

// ---------------------------------------------------------------- attacks, by family

/// Literals the printer writes back differently than they were written, or that PostgreSQL
/// reads differently than the parser: their values belong in parameters.
#[test]
fn literal_kinds_that_do_not_print_back_faithfully_are_refused() {
    for sql in [
        "SELECT * FROM users WHERE name = N'x'' OR true --'",
        "SELECT * FROM users WHERE name = E'\\' OR true --'",
        "SELECT * FROM users WHERE name = E'x'",
        "SELECT * FROM users WHERE name = X'41'",
        "SELECT * FROM users WHERE name = B'0101'",
        "SELECT * FROM users WHERE name = U&'\\0041'",
        "SELECT * FROM users WHERE name = $$x$$",
        "SELECT * FROM users WHERE name = $tag$x$tag$",
        "SELECT 0x1F FROM users",
        "SELECT 1_000 FROM users",
    ] {
        let reason = refused(sql);
        assert!(
            reason.contains("literal") || reason.contains("read back"),
            "{sql:?}: {reason}"
        );
    }
}

#[test]
fn plain_strings_keep_backslashes_and_doubled_quotes_exactly() {
    assert_eq!(
        rewritten(r"SELECT id FROM users WHERE name = 'a\' OR name = 'it''s' OR name = 'x'"),
        r#"SELECT id FROM "shop_users" AS users WHERE name = $q0$a\$q0$ OR name = $q0$it's$q0$ OR name = 'x'"#
    );
    // A value that holds the first tag gets the next one.
    assert_eq!(
        rewritten(r"SELECT id FROM users WHERE name = '$q0$''$q'"),
        r#"SELECT id FROM "shop_users" AS users WHERE name = $q1$$q0$'$q$q1$"#
    );
}

/// `(x).f`, `t.c.f` and `g.f` for a function `g` in FROM are calls of `f` in PostgreSQL.
#[test]
fn functions_reached_through_attribute_notation_are_refused() {
    for sql in [
        "SELECT (name).pg_read_file FROM users",
        "SELECT ('/etc/passwd'::text).pg_read_file FROM users",
        "SELECT (users.name).pg_read_file FROM users",
        "SELECT users.name.pg_read_file FROM users",
        "SELECT g.pg_read_file FROM unnest(ARRAY['/etc/passwd']) AS g",
        "SELECT g.pg_read_file FROM unnest(ARRAY['/etc/passwd']) AS g(p)",
        "SELECT unnest.pg_read_file FROM unnest(ARRAY['/etc/passwd'])",
        "SELECT s.pg_ls_dir FROM generate_series(1, 1) AS s",
        "SELECT * FROM users WHERE (SELECT g.lo_get FROM unnest(ARRAY[1]) AS g) IS NULL",
        "SELECT count(*) FROM users, LATERAL unnest(ARRAY['.']) AS d WHERE d.pg_ls_dir IS NULL",
    ] {
        refused(sql);
    }
    // Their own columns stay readable.
    rewritten("SELECT g.n FROM generate_series(1, 3) AS g(n)");
    rewritten("SELECT g FROM unnest(ARRAY[1, 2]) AS g");
    rewritten("SELECT g.g FROM unnest(ARRAY[1, 2]) AS g");
    rewritten("SELECT e.key, e.value FROM jsonb_each('{}'::jsonb) AS e");
    rewritten("SELECT users.name FROM users");
}

/// Casts to object-identifier types look names up (and pin them in defaults); row types of
/// tables pin those tables; other named types may come from anywhere.
#[test]
fn object_identifier_types_and_row_types_are_refused_everywhere() {
    for sql in [
        "SELECT 'victim_secrets'::regclass",
        "SELECT CAST('pg_read_file' AS regproc)",
        "SELECT 'pg_read_file(text)'::regprocedure::oid",
        "SELECT regclass 'victim_secrets'",
        "SELECT ARRAY['a']::regclass[]",
        "SELECT 'postgres'::regrole",
        "SELECT 'public'::regnamespace",
        "SELECT '<a/>'::xml",
        "SELECT ROW(1)::victim_secrets",
        "CREATE TABLE items (pinned victim_secrets)",
        "CREATE TABLE items (pinned users)",
        "CREATE TABLE items (id int DEFAULT nextval('victim_seq'))",
        "CREATE TABLE items (id regclass DEFAULT 'victim_seq')",
        "CREATE TABLE items (id int DEFAULT ('victim_seq'::regclass)::int)",
        "ALTER TABLE items ALTER COLUMN id TYPE regclass",
        "ALTER TABLE items ADD COLUMN pinned victim_secrets",
    ] {
        refused(sql);
    }
    rewritten("CREATE TABLE items (id serial PRIMARY KEY, at timestamptz, tags text[], ip inet)");
    rewritten("SELECT '1'::int, CAST('2024-01-01' AS date), DATE '2024-01-01' FROM items");
}

/// Words PostgreSQL reads as function calls without parentheses.
#[test]
fn keywords_that_are_functions_are_refused() {
    for word in [
        "current_user",
        "session_user",
        "user",
        "current_role",
        "current_schema",
        "current_catalog",
        "system_user",
        "CURRENT_USER",
    ] {
        refused(&format!("SELECT {word} FROM users"));
    }
    // Quoted, it is a column.
    rewritten(r#"SELECT "user" FROM users"#);
}

fn leveled_grants() -> ResourceGrants {
    let tables: Vec<String> = ["orders", "rates:read", "log:write"]
        .iter()
        .map(|table| table.to_string())
        .collect();
    ResourceGrants::resolve(PLUGIN, &tables, &[], &[], None).expect("valid grants")
}

fn level_refusal(sql: &str) -> (String, &'static str, &'static str) {
    match guard_statement(PLUGIN, sql, &leveled_grants()) {
        Err(Error::AccessLevelDenied {
            kind,
            name,
            granted,
            needed,
        }) => {
            assert_eq!(kind, "table", "{sql:?}");
            (name, granted, needed)
        }
        other => panic!("expected {sql:?} to be refused for its level, got {other:?}"),
    }
}

fn level_passes(sql: &str) {
    if let Err(error) = guard_statement(PLUGIN, sql, &leveled_grants()) {
        panic!("expected {sql:?} to pass, got {error}");
    }
}

#[test]
fn a_read_table_is_read_anywhere_and_written_nowhere() {
    for sql in [
        "SELECT * FROM rates",
        "SELECT * FROM orders WHERE rate IN (SELECT id FROM rates)",
        "WITH r AS (SELECT * FROM rates) SELECT * FROM r",
        "INSERT INTO orders (rate) SELECT id FROM rates",
        "UPDATE orders SET rate = rates.id FROM rates WHERE rates.code = orders.code",
        "DELETE FROM orders USING rates WHERE rates.id = orders.rate",
        "INSERT INTO log (entry) SELECT code FROM rates",
    ] {
        level_passes(sql);
    }
    for sql in [
        "INSERT INTO rates (id) VALUES (1)",
        "UPDATE rates SET id = 2",
        "DELETE FROM rates",
        "WITH gone AS (DELETE FROM rates RETURNING *) SELECT * FROM gone",
        "WITH x AS (UPDATE rates SET id = 1 RETURNING id) SELECT * FROM orders",
        "SELECT * FROM rates FOR UPDATE",
        "SELECT * FROM orders WHERE id IN (SELECT id FROM rates FOR SHARE)",
        "INSERT INTO rates SELECT * FROM orders",
    ] {
        assert_eq!(
            level_refusal(sql),
            ("rates".to_string(), "read", "write"),
            "{sql:?}"
        );
    }
}

#[test]
fn ddl_indexes_truncate_and_references_need_owner() {
    for sql in [
        "CREATE TABLE log (id int)",
        "ALTER TABLE log ADD COLUMN at timestamptz",
        "DROP TABLE log",
        "TRUNCATE log",
        "CREATE INDEX by_entry ON log (entry)",
        "CREATE TABLE orders (rate int REFERENCES log (id))",
        "ALTER TABLE orders RENAME TO log",
    ] {
        assert_eq!(
            level_refusal(sql),
            ("log".to_string(), "write", "owner"),
            "{sql:?}"
        );
    }
    for sql in [
        "INSERT INTO log (entry) VALUES ('x') RETURNING id",
        "UPDATE log SET entry = 'y'",
        "DELETE FROM log WHERE id = 1",
        "SELECT * FROM log FOR UPDATE",
        "CREATE INDEX by_rate ON orders (rate)",
        "TRUNCATE orders",
    ] {
        level_passes(sql);
    }
    let dropped = guard_statement(PLUGIN, "DROP INDEX by_rate", &leveled_grants())
        .expect("passes the guard; the gateway checks the index's table");
    assert_eq!(dropped.dropped_indexes, ["shop_by_rate"]);
}

// Property tests: what runs is what was checked.
mod property_tests;
