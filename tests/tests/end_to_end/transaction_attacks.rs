//! Attacks on a plugin's transactions, by a hostile plugin author or a careless client: pushed
//! past their connections, their time limit and their instance, nested, thenables, read-only
//! escapes and result limits. After each attack the plugin's role must hold no session inside a
//! transaction and no statement still running, checked in PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::json;
use warden_tests::{assert_error, wait_until, WardenProcess};

use crate::gateways::{start, unique, unload};
use crate::plugin_data::{
    balances, load_scripted, open_transactions_of, script, scripted_plugin, HANGING_TRANSACTION,
};
use crate::plugin_data_attacks::{
    active_statements_of, background_outcome, drop_table, in_background, role_of, PATIENCE,
};

#[actix_rt::test]
async fn more_transactions_than_connections_wait_or_fail_typed_and_spare_other_plugins() {
    let hog = unique("txhog");
    let calm = unique("txcalm");
    let warden = WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "3000"),
            ("WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN", "2"),
        ],
        &[],
    );
    let role = load_scripted(&warden, &hog).await;
    load_scripted(&warden, &calm).await;
    let api = &warden.admin();
    in_background(
        api,
        &hog,
        r#"
        const hang = (id) => new Promise((started) => {
          db.transaction(async (tx) => {
            await tx.executeCommand("UPDATE accounts SET balance = balance - 1 WHERE id = $1", [id]);
            started();
            await new Promise(() => {});
          }).catch(() => {});
        });
        await Promise.all([hang(1), hang(2)]);
        const began = Date.now();
        const third = await db.transaction((tx) => tx.executeQuery("SELECT 1 AS one"))
          .then((rows) => "ran", (error) => error.name + " " + error.code);
        const outside = await db.executeQuery("SELECT 1 AS one").then(() => "ran", (error) => error.name + " " + error.code);
        return { third, outside, waited: Date.now() - began };"#,
    )
    .await;
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 2 }).await);
    // Meanwhile the other plugin's statements and transactions run at once.
    let mut calm_slowest = Duration::ZERO;
    for _ in 0..5 {
        let began = Instant::now();
        let (status, body) = script(
            api,
            &calm,
            "return db.transaction(async (tx) => (await tx.executeQuery('SELECT count(*)::int AS n FROM accounts'))[0].n);",
        )
        .await;
        assert_eq!((status, body["result"].clone()), (200, json!(2)), "{body}");
        calm_slowest = calm_slowest.max(began.elapsed());
    }
    let outcome = background_outcome(api, &hog).await;
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await);
    let hog_balances = balances(&hog);
    unload(api, &hog).await;
    unload(api, &calm).await;
    drop_table(&format!("{hog}_accounts"));
    drop_table(&format!("{calm}_accounts"));
    assert!(calm_slowest < Duration::from_secs(1), "{calm_slowest:?}");
    let value = &outcome["value"];
    for key in ["third", "outside"] {
        let said = value[key].as_str().unwrap_or_default();
        assert!(
            said == "ran" || said == "DatabaseError 57014",
            "{key}: {outcome}"
        );
    }
    assert!(value["waited"].as_u64().unwrap() < 5_000, "{outcome}");
    assert_eq!(hog_balances, "100,100");
}

#[actix_rt::test]
async fn a_restart_after_heap_exhaustion_rolls_back_the_open_transaction_at_once() {
    let name = unique("txheap");
    // A long call limit, so that only the restart, not the time limit, can end it soon.
    let warden = WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "20000"),
            ("WARDEN_PLUGIN_MEMORY_MB", "64"),
        ],
        &[],
    );
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    assert_eq!(
        script(api, &name, HANGING_TRANSACTION).await.1["result"],
        "started"
    );
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 1 }).await);
    let began = Instant::now();
    let answer = script(
        api,
        &name,
        "const hoard = []; while (true) hoard.push(new Array(100000).fill(hoard.length));",
    )
    .await;
    let rolled_back = wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await;
    let took = began.elapsed();
    let restarted = wait_until(PATIENCE, || async {
        let info = api.plugin(&name).await;
        info["state"] == "running" && info["restarts"] == 1
    })
    .await;
    let works = script(
        api,
        &name,
        "return (await db.executeQuery('SELECT count(*)::int AS n FROM accounts'))[0].n;",
    )
    .await;
    let after = balances(&name);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    assert_ne!(answer.0, 200, "{answer:?}");
    assert!(rolled_back && took < Duration::from_secs(10), "{took:?}");
    assert_eq!(after, "100,100");
    assert!(restarted);
    assert_eq!(works.1["result"], 2, "{works:?}");
}

#[actix_rt::test]
async fn a_runaway_loop_restart_leaves_no_transaction_and_nothing_committed() {
    let name = unique("txspin");
    let warden =
        WardenProcess::start_with_stack(&[], &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "2000")], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    // One opened from a timer before the loop, one begun in the very call that then spins.
    assert_eq!(
        script(api, &name, HANGING_TRANSACTION).await.1["result"],
        "started"
    );
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 1 }).await);
    let answer = script(
        api,
        &name,
        r#"
        db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 2");
          return "committed";
        }).catch(() => {});
        while (true) {}"#,
    )
    .await;
    assert_error(&answer, 504, "timeout");
    let restarted = wait_until(PATIENCE, || async {
        let info = api.plugin(&name).await;
        info["state"] == "running" && info["restarts"] == 1
    })
    .await;
    let rolled_back = wait_until(PATIENCE, || async {
        open_transactions_of(&role) == 0 && active_statements_of(&role) == 0
    })
    .await;
    // Several statements on the pool afterwards: none is inside a leftover transaction.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            script(api, &name, "return (await db.executeQuery('SELECT string_agg(balance::text, \\',\\' ORDER BY id) AS b FROM accounts'))[0].b;")
                .await
                .1["result"]
                .clone(),
        );
    }
    let after = balances(&name);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    assert!(restarted && rolled_back);
    assert_eq!(after, "100,100");
    assert!(seen.iter().all(|b| b == "100,100"), "{seen:?}");
}

#[actix_rt::test]
async fn a_statement_cancelled_at_the_time_limit_leaves_a_transaction_that_cannot_commit() {
    let name = unique("txcancel");
    let warden =
        WardenProcess::start_with_stack(&[], &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "2000")], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    in_background(
        api,
        &name,
        r#"
        return await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 1");
          self.heavy = await tx.executeQuery("SELECT count(*) AS n FROM generate_series(1, 10000000000)")
            .then(() => "finished", (error) => error.name + " " + error.code);
          return "swallowed";
        });"#,
    )
    .await;
    let outcome = background_outcome(api, &name).await;
    let (_, heavy) = script(
        api,
        &name,
        "return self.heavy === undefined ? null : self.heavy;",
    )
    .await;
    let quiet = wait_until(PATIENCE, || async {
        active_statements_of(&role) == 0 && open_transactions_of(&role) == 0
    })
    .await;
    let after = balances(&name);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error == "DatabaseError" || error == "TransactionClosedError",
        "a transaction whose statement was cancelled committed: {outcome} (heavy: {heavy})"
    );
    assert_eq!(heavy["result"], "DatabaseError 57014", "{heavy}");
    assert!(
        quiet,
        "a backend of the plugin is still running or inside a transaction"
    );
    assert_eq!(after, "100,100");
}

#[actix_rt::test]
async fn statements_sent_all_at_once_in_one_transaction_run_in_turn_and_one_failure_aborts_all() {
    let name = unique("txall");
    let warden = start(&[], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    let (_, body) = script(
        api,
        &name,
        r#"
        const counts = await db.transaction((tx) => Promise.all(Array.from({ length: 100 },
          () => tx.executeCommand("UPDATE accounts SET balance = balance + 1 WHERE id = 1"))));
        return counts.reduce((sum, count) => sum + count, 0);"#,
    )
    .await;
    assert_eq!(body["result"], 100, "{body}");
    assert_eq!(balances(&name), "200,100");
    let (_, body) = script(
        api,
        &name,
        r#"
        return db.transaction(async (tx) => {
          const settled = await Promise.allSettled(Array.from({ length: 30 }, (_, index) => index === 10
            ? tx.executeCommand("UPDATE accounts SET balance = balance / 0 WHERE id = 2")
            : tx.executeCommand("UPDATE accounts SET balance = balance + 1 WHERE id = 2")));
          return settled.map((one) => one.status === "fulfilled" ? "ok" : one.reason.code);
        }).then((value) => ({ committed: value }), (error) => ({ error: error.name + " " + error.code }));"#,
    )
    .await;
    let after = balances(&name);
    let open = open_transactions_of(&role);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    assert_eq!(
        body["result"],
        json!({"error": "DatabaseError 25P02"}),
        "{body}"
    );
    assert_eq!(after, "200,100");
    assert_eq!(open, 0);
}

#[actix_rt::test]
async fn nested_transactions_stay_apart_and_a_self_deadlock_ends_at_the_time_limit() {
    let name = unique("txnest");
    let warden =
        WardenProcess::start_with_stack(&[], &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "2000")], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    let (status, body) = script(
        api,
        &name,
        r#"
        let kept;
        return db.transaction(async (outer) => {
          await outer.executeCommand("UPDATE accounts SET balance = 1 WHERE id = 1");
          const innerSaw = await db.transaction(async (inner) => {
            kept = inner;
            // The outer handle inside the inner callback still runs on the outer transaction.
            await outer.executeCommand("UPDATE accounts SET balance = 2 WHERE id = 2");
            const rows = await inner.executeQuery("SELECT string_agg(balance::text, ',' ORDER BY id) AS b FROM accounts");
            return rows[0].b;
          });
          const outerSaw = (await outer.executeQuery("SELECT string_agg(balance::text, ',' ORDER BY id) AS b FROM accounts"))[0].b;
          const late = await kept.executeQuery("SELECT 1").then(() => "ran", (error) => error.name);
          return { innerSaw, outerSaw, late };
        });"#,
    )
    .await;
    assert_eq!(
        (status, body["result"].clone()),
        (
            200,
            json!({"innerSaw": "100,100", "outerSaw": "1,2", "late": "TransactionClosedError"})
        ),
        "{body}"
    );
    assert_eq!(balances(&name), "1,2");

    // The inner transaction waits for a row the outer one holds, while the outer one waits for
    // the inner one: only the time limit can end it, and it must.
    in_background(
        api,
        &name,
        r#"
        return await db.transaction(async (outer) => {
          await outer.executeCommand("UPDATE accounts SET balance = 7 WHERE id = 1");
          await db.transaction((inner) => inner.executeCommand("UPDATE accounts SET balance = 8 WHERE id = 1"));
          await outer.executeCommand("UPDATE accounts SET balance = 9 WHERE id = 2");
          return "both";
        });"#,
    )
    .await;
    let outcome = background_outcome(api, &name).await;
    let quiet = wait_until(PATIENCE, || async {
        open_transactions_of(&role) == 0 && active_statements_of(&role) == 0
    })
    .await;
    let after = balances(&name);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    assert!(outcome["error"].is_string(), "{outcome}");
    assert!(outcome["ms"].as_u64().unwrap() < 6_000, "{outcome}");
    assert!(quiet);
    // The outer transaction never committed: account 2 is as before.
    assert!(after.ends_with(",2"), "{after}");
}

#[actix_rt::test]
async fn read_only_transactions_refuse_writes_in_ctes_and_every_way_to_turn_them_off() {
    let name = unique("txro");
    let warden = start(&[], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    let (_, body) = script(
        api,
        &name,
        r#"
        const attempts = [
          ["WITH gone AS (DELETE FROM accounts RETURNING id) SELECT count(*) AS n FROM gone", true],
          ["INSERT INTO accounts VALUES (3, 3) RETURNING id", true],
          ["UPDATE accounts SET balance = 0 RETURNING id", true],
          ["SELECT set_config('transaction_read_only', 'off', true)", true],
          ["SELECT set_config('default_transaction_read_only', 'off', false)", true],
          ["SET LOCAL transaction_read_only = off", false],
          ["SET TRANSACTION READ WRITE", false],
          ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", false],
        ];
        const outcomes = {};
        for (const [sql, query] of attempts) {
          outcomes[sql] = await db.transaction(async (tx) => {
            await tx.executeQuery("SELECT 1 AS warm");
            await (query ? tx.executeQuery(sql) : tx.executeCommand(sql));
            // A write after the attempt, in case it turned read-only off.
            return tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 1");
          }, { readOnly: true, isolation: "serializable" }).then(() => "ran", (error) => error.name + " " + (error.code || ""));
        }
        // Outside, on the pool, no connection is left read-only.
        const writes = [];
        for (let i = 0; i < 6; i++) writes.push(await db.executeCommand("UPDATE accounts SET balance = balance WHERE id = 2"));
        return { outcomes, writes };"#,
    )
    .await;
    let after = balances(&name);
    let open = open_transactions_of(&role);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    let outcomes = body["result"]["outcomes"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    // PostgreSQL refuses the writes (25006), the guard every way to change the setting.
    let ran: Vec<&String> = outcomes
        .iter()
        .filter(|(_, said)| *said != "DatabaseError 25006" && *said != "SqlNotAllowedError ")
        .map(|(sql, _)| sql)
        .collect();
    assert!(
        ran.is_empty(),
        "not refused in a read-only transaction: {ran:?} ({body})"
    );
    assert_eq!(outcomes.len(), 8, "{body}");
    assert_eq!(
        body["result"]["writes"],
        json!([1, 1, 1, 1, 1, 1]),
        "{body}"
    );
    assert_eq!(after, "100,100");
    assert_eq!(open, 0);
}

#[actix_rt::test]
async fn result_limits_hold_inside_a_transaction_and_its_connection_comes_back_clean() {
    let name = unique("txlimit");
    let warden = WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "30000"),
            ("WARDEN_DATABASE_MAX_ROWS", "50"),
            ("WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN", "1"),
        ],
        &[],
    );
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    let (_, body) = script(
        api,
        &name,
        r#"
        const inside = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 50 WHERE id = 1");
          const big = await tx.executeQuery("SELECT n FROM generate_series(1, 1000) AS g(n)").then((rows) => rows.length, (error) => error.name);
          const wide = await tx.executeQuery("SELECT n, repeat('x', 1000) AS pad FROM generate_series(1, 60) AS g(n)").then((rows) => rows.length, (error) => error.name);
          const after = (await tx.executeQuery("SELECT balance FROM accounts WHERE id = 1"))[0].balance;
          return { big, wide, after };
        });
        // One connection only: the next statements reuse the transaction's connection.
        const outside = [];
        for (let i = 0; i < 3; i++) outside.push((await db.executeQuery("SELECT balance FROM accounts WHERE id = 1"))[0].balance);
        const rolledBack = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 999 WHERE id = 2");
          await tx.executeQuery("SELECT n FROM generate_series(1, 1000) AS g(n)");
        }).then(() => "committed", (error) => error.name);
        const two = (await db.executeQuery("SELECT balance FROM accounts WHERE id = 2"))[0].balance;
        return { inside, outside, rolledBack, two };"#,
    )
    .await;
    let after = balances(&name);
    let open = open_transactions_of(&role);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    assert_eq!(
        body["result"],
        json!({
            "inside": {"big": "ResultTooLargeError", "wide": "ResultTooLargeError", "after": 50},
            "outside": [50, 50, 50],
            "rolledBack": "ResultTooLargeError",
            "two": 100,
        }),
        "{body}"
    );
    assert_eq!(after, "50,100");
    assert_eq!(open, 0);
}

#[actix_rt::test]
async fn thenables_and_replaced_promise_built_ins_leave_commit_and_rollback_to_the_outcome() {
    let name = unique("txthen");
    let warden = start(&[], &[]);
    let role = load_scripted(&warden, &name).await;
    let api = &warden.admin();
    let (_, body) = script(
        api,
        &name,
        r#"
        const results = {};
        results.thenable = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 11 WHERE id = 1");
          return { then(resolve) { setTimeout(() => resolve("thenable"), 50); } };
        }).catch((error) => "threw " + error.message);
        results.rejecting = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 2");
          return { then(_, reject) { reject(new Error("thenable says no")); } };
        }).then(() => "committed", (error) => error.message);
        results.getter = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 2");
          return { get then() { throw new Error("then getter"); } };
        }).then(() => "committed", (error) => error.message);
        // A subclass in place of the global Promise, and a then that swaps outcomes, while
        // transactions run: whatever the plugin makes of its own promises, each ends.
        const OriginalPromise = Promise;
        const originalThen = Promise.prototype.then;
        globalThis.Promise = class Sneaky extends OriginalPromise {};
        Promise.prototype.then = function (onFulfilled, onRejected) { return originalThen.call(this, onRejected, onFulfilled); };
        try {
          try { await db.transaction((tx) => tx.executeCommand("UPDATE accounts SET balance = 12 WHERE id = 1")); } catch (error) {}
          try { await db.transaction(async (tx) => { await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 2"); throw new Error("undo"); }); } catch (error) {}
        } finally {
          Promise.prototype.then = originalThen;
          globalThis.Promise = OriginalPromise;
        }
        results.after = await db.transaction((tx) => tx.executeQuery("SELECT string_agg(balance::text, ',' ORDER BY id) AS b FROM accounts")).then((rows) => rows[0].b);
        return results;"#,
    )
    .await;
    let quiet = wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await;
    let after = balances(&name);
    unload(api, &name).await;
    drop_table(&format!("{name}_accounts"));
    let result = &body["result"];
    assert_eq!(result["thenable"], "thenable", "{body}");
    assert_eq!(result["rejecting"], "thenable says no", "{body}");
    assert_eq!(result["getter"], "then getter", "{body}");
    assert!(quiet);
    // Account 2 was only ever changed by transactions that rejected.
    assert!(after.ends_with(",100"), "{after} ({body})");
    assert_eq!(result["after"], json!(after), "{body}");
}

#[actix_rt::test]
async fn a_commit_that_postgresql_refuses_rejects_typed_and_leaves_nothing_open() {
    // A deferred constraint is checked only at COMMIT: the commit itself fails.
    let name = unique("txdefer");
    let warden = start(&[], &[]);
    warden.write_plugin(
        &format!("{name}.js"),
        &scripted_plugin(&name, &["accounts", "moves"]),
    );
    let api = &warden.admin();
    assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    let role = role_of(api, &name).await;
    let (_, created) = script(
        api,
        &name,
        "return db.executeCommand('CREATE TABLE moves (id INT PRIMARY KEY, account INT REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED)');",
    )
    .await;
    let (_, body) = script(
        api,
        &name,
        r#"
        const failed = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 1");
          await tx.executeCommand("INSERT INTO moves VALUES (1, 42)");
          return "inserted";
        }).then((value) => "committed " + value, (error) => error.name + " " + error.code);
        const next = [];
        for (let i = 0; i < 4; i++) next.push((await db.executeQuery("SELECT count(*)::int AS n FROM moves"))[0].n);
        const again = await db.transaction((tx) => tx.executeCommand("INSERT INTO moves VALUES (2, 1)"));
        return { failed, next, again };"#,
    )
    .await;
    let after = balances(&name);
    let open = open_transactions_of(&role);
    unload(api, &name).await;
    drop_table(&format!("{name}_moves"));
    drop_table(&format!("{name}_accounts"));
    assert_eq!(created["result"], 0, "{created}");
    assert_eq!(
        body["result"],
        json!({"failed": "DatabaseError 23503", "next": [0, 0, 0, 0], "again": 1}),
        "{body}"
    );
    assert_eq!(after, "100,100");
    assert_eq!(open, 0);
}
