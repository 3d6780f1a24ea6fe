//! Attacks from a white-box review of the guard; each must be refused.

use super::*;

fn grants() -> ResourceGrants {
    ResourceGrants::resolve(
        "shop",
        &["users".into(), "rates:read".into(), "orders:write".into()],
        &[],
        &[],
        None,
    )
    .unwrap()
}

/// A function in `FROM` and a composite one of the same name in another scope: `g.f` is the call
/// `f(g)` on the scalar one, whatever the other allows.
#[test]
fn function_alias_shadowed_in_another_scope_is_still_checked() {
    for sql in [
        "SELECT g.pg_sleep FROM generate_series(10, 10) AS g WHERE EXISTS (SELECT 1 FROM jsonb_each('{}') AS g)",
        "SELECT g.pg_sleep FROM generate_series(10, 10) AS g WHERE EXISTS (SELECT 1 FROM unnest(ARRAY[1]) AS g(pg_sleep))",
        "SELECT g.current_setting FROM unnest(ARRAY['is_superuser']) AS g, LATERAL (SELECT 1 FROM jsonb_each('{}') AS g) s",
        "SELECT g.pg_terminate_backend FROM generate_series(1, 99) AS g UNION SELECT 1 FROM jsonb_each_text('{}') AS g",
    ] {
        refused(sql);
    }
    // Still allowed: a column every function of that name has.
    assert!(guard_statement(
        "shop",
        "SELECT g.key FROM jsonb_each('{}') AS g WHERE EXISTS (SELECT 1 FROM jsonb_each_text('{}') AS g)",
        &grants()
    )
    .is_ok());
}

/// Attacks tried in the review that the guard refuses.
const REFUSED: &[&str] = &[
    "SELECT g.pg_sleep FROM generate_series(10, 10) AS g WHERE EXISTS (SELECT 1 FROM unnest(ARRAY[1]) AS g(pg_sleep))",
    "SELECT g.current_setting FROM unnest(ARRAY['is_superuser']) AS g, LATERAL (SELECT 1 FROM jsonb_each('{}') AS g) s",
    "SELECT * FROM victim_secrets",
    "WITH a AS (SELECT * FROM victim_secrets) SELECT 1",
    "WITH a AS (WITH b AS (SELECT 1) SELECT * FROM b), c AS (SELECT * FROM b) SELECT * FROM c",
    "SELECT (SELECT 1 FROM b) FROM (WITH b AS (SELECT 1) SELECT * FROM b) s",
    "SELECT * FROM users NATURAL JOIN victim_secrets",
    "SELECT * FROM rates FOR UPDATE",
    "SELECT * FROM (SELECT * FROM rates) s FOR UPDATE",
    "WITH s AS (SELECT * FROM rates) SELECT * FROM s FOR UPDATE",
    "SELECT * FROM rates FOR SHARE",
    "SELECT * FROM rates FOR KEY SHARE",
    "INSERT INTO rates VALUES (1)",
    "WITH x AS (UPDATE rates SET a = 1 RETURNING *) SELECT * FROM x",
    "CREATE INDEX ON orders (a)",
    "CREATE TABLE orders (a int)",
    "ALTER TABLE orders ADD COLUMN b int",
    "TRUNCATE orders",
    "CREATE TABLE users (a int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME victim_seq))",
    "CREATE TABLE users (a int) USING heap",
    "CREATE TABLE users PARTITION BY RANGE (a)",
    "CREATE TABLE users (a int, EXCLUDE USING gist (a WITH =))",
    "CREATE INDEX ON users (a) TABLESPACE pg_default",
    "ALTER TABLE users ALTER COLUMN a SET DEFAULT pg_backend_pid()",
    "ALTER TABLE users ALTER COLUMN a TYPE regclass USING a::regclass",
    "ALTER TABLE users ALTER COLUMN a SET STATISTICS 1000",
    "ALTER TABLE users ALTER COLUMN a SET STORAGE PLAIN",
    "ALTER TABLE users ALTER COLUMN a ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME victim_seq)",
    "ALTER TABLE users RENAME TO victim_secrets",
    "ALTER TABLE users SET SCHEMA public",
    "ALTER TABLE users OWNER TO postgres",
    "ALTER TABLE users INHERIT victim_secrets",
    "ALTER TABLE users ADD CONSTRAINT c FOREIGN KEY (a) REFERENCES victim_secrets (id)",
    "ALTER TABLE users ADD CONSTRAINT c UNIQUE USING INDEX victim_idx",
    "ALTER TABLE users ADD CONSTRAINT c PRIMARY KEY USING INDEX victim_idx",
    "ALTER TABLE users CLUSTER ON victim_idx",
    "ALTER TABLE users REPLICA IDENTITY USING INDEX victim_idx",
    "ALTER TABLE users DISABLE TRIGGER ALL",
    "ALTER TABLE users ATTACH PARTITION victim_secrets FOR VALUES FROM (1) TO (2)",
    "ALTER TABLE users DETACH PARTITION victim_secrets",
    "ALTER TABLE users ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE users SET (autovacuum_enabled = false)",
    "ALTER TABLE users SET LOGGED",
    "ALTER TABLE users SET TABLESPACE x",
    "ALTER TABLE users OF victim_type",
    "CREATE TABLE users OF victim_type",
    "SELECT * FROM users WHERE a IS DOCUMENT",
    "SELECT format(VARIADIC ARRAY['a'])",
    "SELECT count(*) FILTER (WHERE a IN (SELECT 1 FROM victim_secrets)) FROM users",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM users",
    "INSERT INTO users VALUES (1) ON CONFLICT (a) WHERE a IN (SELECT 1 FROM victim_secrets) DO NOTHING",
    "INSERT INTO users VALUES (1) RETURNING (SELECT 1 FROM victim_secrets)",
    "SELECT g.pg_read_file FROM unnest(ARRAY['/etc/passwd']) WITH ORDINALITY AS g",
    "SELECT generate_series.pg_read_file FROM generate_series(1, 2)",
    "SELECT \"generate_series\".pg_read_file FROM generate_series(1, 2)",
    "SELECT unnest.pg_read_file FROM unnest(ARRAY['/etc/passwd'])",
    "SELECT g.pg_read_file FROM ROWS FROM (unnest(ARRAY['/etc/passwd'])) AS g",
    "SELECT g.pg_read_file FROM (SELECT 1) s, LATERAL unnest(ARRAY['/etc/passwd']) AS g",
    "SELECT g.pg_read_file FROM jsonb_array_elements_text('[1]') g",
    "SELECT (g).pg_read_file FROM unnest(ARRAY['/etc/passwd']) AS g",
    "SELECT g.pg_read_file FROM UNNEST(ARRAY['/etc/passwd']) g",
    "SELECT G.pg_read_file FROM UNNEST(ARRAY['/etc/passwd']) \"g\"",
    "SELECT pg_read_file(a) FROM users",
    "SELECT current_setting('x')",
    "SELECT CURRENT_USER",
    "SELECT CURRENT_SCHEMA",
    "SELECT SESSION_USER",
    "SELECT COLLATION FOR (a) FROM users",
    "SELECT 1 COLLATE \"C\"",
    "SELECT a FROM users ORDER BY a COLLATE \"C\"",
    "SELECT lower(a) FROM users ORDER BY a USING ~<~",
    "SELECT * FROM users u WHERE a = $1::regclass",
    "SELECT $1::\"regclass\"",
    "SELECT 'pg_authid'::text::regclass",
    "SELECT 1::oid::regclass",
    "SELECT 'x'::name",
    "SELECT 'pg_sleep'::regproc",
    "SELECT a::users FROM users",
    "SELECT * FROM LATERAL victim_secrets",
    "SELECT * FROM ONLY victim_secrets",
    "SELECT * FROM ONLY users",
    "SELECT * FROM users *",
    "WITH rates AS (SELECT 1) UPDATE rates SET a = 1",
    "WITH rates AS (SELECT 1) INSERT INTO rates VALUES (1)",
    "SELECT * INTO victim FROM users",
    "CREATE TABLE users AS SELECT * FROM victim_secrets",
    "CREATE TABLE users AS TABLE victim_secrets",
    "SELECT * FROM \"victim_secrets\"",
    "SELECT * FROM \"Users\"",
    "SELECT * FROM \"shop_users\"",
    "SELECT * FROM \"users\"\"\"",
    "SELECT * FROM \"pg_catalog.pg_authid\"",
    "SELECT * FROM pg_authid",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM pg_stat_activity",
    "SELECT 1 -- \n FROM victim_secrets",
    "SELECT - -1",
    "SELECT @-1",
    "SELECT E'\\x41'",
    "SELECT U&'\\0041'",
    "SELECT $$a$$",
    "SELECT $q0$a$q0$",
    "SELECT 0x10",
    "SELECT 1_000",
    "SELECT B'101'",
    "SELECT X'ff'",
    "SELECT N'x'",
    "SELECT jsonb_set(a, '{x}', to_jsonb(current_user)) FROM users",
    "SELECT string_agg(a, ',' ORDER BY (SELECT 1 FROM victim_secrets)) FROM users",
    "SELECT rank() OVER w FROM users WINDOW w AS (ORDER BY (SELECT 1 FROM victim_secrets))",
    "SELECT * FROM users TABLESAMPLE SYSTEM (1)",
    "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x int)",
    "SELECT * FROM JSON_TABLE('[]', '$[*]' COLUMNS (x int PATH '$'))",
    "SELECT DISTINCT ON ((SELECT 1 FROM victim_secrets)) a FROM users",
    "SELECT * FROM users LIMIT (SELECT 1 FROM victim_secrets)",
    "SELECT * FROM users OFFSET (SELECT 1 FROM victim_secrets) ROWS FETCH FIRST (SELECT 1 FROM victim_secrets) ROWS ONLY",
    "UPDATE users SET a = 1 FROM victim_secrets",
    "UPDATE users SET (a, b) = (SELECT 1, 2 FROM victim_secrets)",
    "UPDATE users SET a = 1 WHERE CURRENT OF c",
    "DELETE FROM users USING victim_secrets",
    "DELETE FROM users WHERE CURRENT OF c",
    "DELETE FROM rates",
    "UPDATE ONLY rates SET a = 1",
    "DELETE FROM ONLY rates",
    "INSERT INTO users OVERRIDING SYSTEM VALUE VALUES (1)",
    "INSERT INTO users (a) SELECT a FROM victim_secrets",
    "TRUNCATE users, victim_secrets",
    "TRUNCATE ONLY rates",
    "DROP TABLE users, victim_secrets",
    "DROP INDEX CONCURRENTLY x",
    "SELECT * FROM users WHERE a = ANY (SELECT a FROM victim_secrets)",
    "SELECT EXISTS (TABLE victim_secrets)",
    "SELECT ARRAY(TABLE victim_secrets)",
    "SELECT (TABLE victim_secrets)",
    "SELECT * FROM (TABLE victim_secrets) t",
    "SELECT 1 UNION TABLE victim_secrets",
    "VALUES ((SELECT 1 FROM victim_secrets))",
    "SELECT * FROM (VALUES (1)) v(a) JOIN LATERAL (SELECT * FROM victim_secrets) x ON true",
    "SELECT xmlelement(name a)",
    "SELECT TREAT(a AS int) FROM users",
    "SELECT a IS NORMALIZED FROM users",
    "SELECT normalize(a) FROM users",
    "SELECT CONVERT(a USING utf8) FROM users",
    "SELECT CAST(a AS text FORMAT 'x') FROM users",
    "SELECT TRY_CAST(a AS int) FROM users",
    "SELECT SAFE_CAST(a AS int) FROM users",
    "SELECT MATCH (a) AGAINST ('x') FROM users",
    "SELECT a FROM users WHERE a RLIKE 'x'",
    "SELECT a FROM users WHERE a REGEXP 'x'",
    "SELECT a:b FROM users",
    "SELECT {'a': 1}",
    "SELECT MAP {'a': 1}",
    "SELECT STRUCT(1)",
    "SELECT 1 FROM users CONNECT BY a = PRIOR b",
    "SELECT * FROM users LATERAL VIEW explode(a) t AS x",
    "SELECT * FROM users PREWHERE a = 1",
    "SELECT * EXCLUDE (a) FROM users",
    "SELECT * EXCEPT (a) FROM users",
    "SELECT * REPLACE (pg_backend_pid() AS a) FROM users",
    "SELECT * RENAME (a AS b) FROM users",
    "SELECT * ILIKE 'a%' FROM users",
    "SELECT * FROM users ORDER BY a NULLS FIRST WITH FILL",
    "SELECT * FROM users u JOIN users v USING (a) AS j",
    "SELECT j.pg_read_file FROM users u JOIN users v USING (a) AS j",
    "SELECT * FROM users WHERE a = 'x' COLLATE \"C\"",
    "SELECT substring('a' SIMILAR 'b' ESCAPE 'c')",
    "SELECT 1 BETWEEN SYMMETRIC 2 AND 3",
    "SELECT 1 IS OF (int)",
    "SELECT cardinality(ARRAY[1]) OPERATOR(pg_catalog.+) 1",
    "SELECT 1 OPERATOR(+) 1",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "SELECT 1; SELECT 2",
    "EXPLAIN ANALYZE SELECT pg_sleep(10)",
    "SHOW ALL",
    "SET ROLE postgres",
    "LISTEN x",
    "NOTIFY x",
    "COPY users TO PROGRAM 'id'",
    "CREATE TABLE users (a int DEFAULT nextval('victim_seq'))",
    "CREATE TABLE users (a int, CONSTRAINT c CHECK (a > 0) NO INHERIT)",
    "CREATE TABLE users (a int) INHERITS (victim_secrets)",
    "CREATE TABLE users (LIKE victim_secrets)",
    "CREATE TABLE users (a int, LIKE victim_secrets)",
    "CREATE TABLE users (\"like\" victim_secrets)",
    "CREATE TABLE users (a victim_secrets)",
    "CREATE TABLE users (a \"users\")",
    "CREATE TABLE users (a int) PARTITION BY LIST ((pg_backend_pid()))",
    "CREATE UNLOGGED TABLE users (a int)",
    "CREATE TEMP TABLE users (a int)",
    "CREATE TABLE users (a serial, PRIMARY KEY (a) INCLUDE (b) WITH (fillfactor = 50) USING INDEX TABLESPACE pg_default)",
    "CREATE INDEX IF NOT EXISTS ON users (a)",
    "CREATE INDEX x ON ONLY users (a)",
    "CREATE INDEX x ON users (a COLLATE \"C\" DESC NULLS LAST)",
];

#[test]
fn refused_attacks() {
    for sql in REFUSED {
        refused(sql);
    }
}

fn refused(sql: &str) {
    let result = guard_statement("shop", sql, &grants());
    assert!(
        result.is_err(),
        "accepted: {sql} -> {:?}",
        result.map(|s| s.sql)
    );
}

/// Long chains that the visitor, printer and drop recurse through must not overflow a 2 MiB stack.
#[test]
fn long_chains_do_not_overflow_the_stack() {
    let mut chains = Vec::new();
    for piece in [
        " UNION SELECT 1",
        " INTERSECT SELECT 1",
        " JOIN users ON true",
    ] {
        let mut sql = String::from("SELECT * FROM users");
        while sql.len() < 32 * 1024 - 30 {
            sql.push_str(piece);
        }
        chains.push(sql);
    }
    chains.push(format!("SELECT a{} FROM users", "[1]".repeat(8000)));
    for sql in chains {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let _ = guard_statement("shop", &sql, &grants());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
