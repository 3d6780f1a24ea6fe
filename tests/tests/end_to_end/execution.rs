//! Calling plugins: results and errors, dependencies between plugins, isolation from Node and
//! the file system, module imports, timers, and concurrent calls into one plugin.

use std::cell::RefCell;

use serde_json::{json, Value};
use warden_tests::{assert_error, plugin_names, wait_until, WardenProcess, PATIENCE};

#[actix_rt::test]
async fn execute_answers_the_result_with_this_bound_to_the_plugin() {
    let greeter = r#"
export default {
  metadata: { name: "greeter", version: "1.0.0" },
  prefix: "Hello",
  async execute(input) {
    return {
      greeting: this.prefix + ", " + input.name,
      shouted: this.shout(input.name),
      input,
    };
  },
  shout(text) { return text.toUpperCase() + "!"; },
};
"#;
    let plain = r#"
export default {
  metadata: { name: "plain", version: "1.0.0" },
  execute(input) { return input === null ? "no input" : undefined; },
};
"#;
    let warden = WardenProcess::start(&[("greeter.js", greeter), ("plain.js", plain)], &[], &[]);
    let api = warden.admin();

    let input = json!({ "name": "Ada", "nested": { "list": [1, 2.5, "x", null, true] } });
    assert_eq!(
        api.execute("greeter", input.clone()).await,
        (
            200,
            json!({ "result": {
                "greeting": "Hello, Ada",
                "shouted": "ADA!",
                "input": input
            } })
        )
    );
    // A synchronous execute works too, and `undefined` comes back as null.
    assert_eq!(
        api.execute("plain", Value::Null).await,
        (200, json!({ "result": "no input" }))
    );
    assert_eq!(
        api.execute("plain", json!(1)).await,
        (200, json!({ "result": null }))
    );
}

#[actix_rt::test]
async fn the_context_knows_the_plugin_name() {
    // The file name differs from the plugin's name on purpose.
    let named = r#"
export default {
  metadata: { name: "billing", version: "1.0.0" },
  async initialize(context) { this.nameAtInitialize = context.pluginName; this.context = context; },
  async execute() { return [this.nameAtInitialize, this.context.pluginName]; },
};
"#;
    let warden = WardenProcess::start(&[("billing_plugin.js", named)], &[], &[]);
    let api = warden.admin();
    assert_eq!(
        api.execute("billing", Value::Null).await,
        (200, json!({ "result": ["billing", "billing"] }))
    );
}

#[actix_rt::test]
async fn thrown_errors_are_execution_failed_with_their_name() {
    let thrower = r#"
class OrderNotFoundError extends Error {
  constructor(message) { super(message); this.name = "OrderNotFoundError"; }
}
export default {
  metadata: { name: "thrower", version: "1.0.0" },
  async execute(input) {
    if (input.kind === "custom") throw new OrderNotFoundError("order 42 does not exist");
    if (input.kind === "type") return null.property;
    if (input.kind === "sync-reject") return Promise.reject(new RangeError("out of range"));
    return "fine";
  },
};
"#;
    let warden = WardenProcess::start(&[("thrower.js", thrower)], &[], &[]);
    let api = warden.admin();

    let custom = api.execute("thrower", json!({ "kind": "custom" })).await;
    assert_error(&custom, 422, "execution_failed");
    assert_eq!(custom.1["error"]["name"], "OrderNotFoundError");
    assert!(
        custom.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("order 42 does not exist"),
        "{custom:?}"
    );

    let type_error = api.execute("thrower", json!({ "kind": "type" })).await;
    assert_error(&type_error, 422, "execution_failed");
    assert_eq!(type_error.1["error"]["name"], "TypeError");

    let range_error = api
        .execute("thrower", json!({ "kind": "sync-reject" }))
        .await;
    assert_error(&range_error, 422, "execution_failed");
    assert_eq!(range_error.1["error"]["name"], "RangeError");

    // The plugin's errors do not hurt it.
    assert_eq!(
        api.execute("thrower", json!({ "kind": "none" })).await,
        (200, json!({ "result": "fine" }))
    );
    let info = api.plugin("thrower").await;
    assert_eq!(
        (&info["state"], &info["restarts"]),
        (&json!("running"), &json!(0))
    );
}

#[actix_rt::test]
async fn a_plugin_without_execute_is_not_executable() {
    let library = r#"
export default {
  metadata: { name: "library", version: "1.0.0" },
  helper() { return 1; },
};
"#;
    let warden = WardenProcess::start(&[("library.js", library)], &[], &[]);
    let api = warden.admin();
    assert_error(
        &api.execute("library", json!({})).await,
        422,
        "not_executable",
    );
}

const USERS: &str = r#"
const calls = [];
export default {
  metadata: { name: "users", version: "1.0.0" },
  async execute(input) { calls.push("execute"); return { executed: input }; },
  async findUser(id, detail) {
    calls.push("findUser");
    return { id, detail, name: "user-" + id, owner: this.metadata.name };
  },
  async callsSoFar() { return calls.slice(); },
};
"#;

#[actix_rt::test]
async fn a_dependent_calls_its_dependency_through_the_handle() {
    let orders = r#"
export default {
  metadata: { name: "orders", version: "1.0.0", dependencies: ["users"] },
  async initialize(context) { this.context = context; },
  async execute(input) {
    const users = this.context.getDependency("users");
    const exported = await users.findUser(7, "full");
    const viaCall = await users.call("findUser", 8, "short");
    const viaExecute = await users.execute({ from: "orders" });
    const dependencies = this.context.getDependencies();
    const all = Array.from(dependencies.keys());
    const calls = await dependencies.get("users").callsSoFar();
    return { exported, viaCall, viaExecute, metadata: users.metadata.name, all, calls };
  },
};
"#;
    let warden = WardenProcess::start(&[("users.js", USERS), ("orders.js", orders)], &[], &[]);
    let api = warden.admin();

    assert_eq!(
        api.execute("orders", json!(null)).await,
        (
            200,
            json!({ "result": {
                "exported": { "id": 7, "detail": "full", "name": "user-7", "owner": "users" },
                "viaCall": { "id": 8, "detail": "short", "name": "user-8", "owner": "users" },
                "viaExecute": { "executed": { "from": "orders" } },
                "metadata": "users",
                "all": ["users"],
                "calls": ["findUser", "findUser", "execute"]
            } })
        )
    );
}

#[actix_rt::test]
async fn an_undeclared_dependency_is_refused_inside_the_plugin() {
    let billing = r#"export default { metadata: { name: "billing", version: "1.0.0" }, execute() { return 1; } };"#;
    let orders = r#"
export default {
  metadata: { name: "orders", version: "1.0.0", dependencies: ["users"] },
  async initialize(context) { this.context = context; },
  async execute(input) { return await this.context.getDependency(input.name).execute(null); },
};
"#;
    let warden = WardenProcess::start(
        &[
            ("users.js", USERS),
            ("orders.js", orders),
            ("billing.js", billing),
        ],
        &[],
        &[],
    );
    let api = warden.admin();

    // `billing` is loaded, but `orders` did not declare it.
    let answer = api.execute("orders", json!({ "name": "billing" })).await;
    assert_error(&answer, 422, "execution_failed");
    assert_eq!(answer.1["error"]["name"], "UndeclaredDependencyError");
    assert_eq!(
        api.execute("orders", json!({ "name": "users" })).await,
        (200, json!({ "result": { "executed": null } }))
    );
}

#[actix_rt::test]
async fn dependency_validation_refuses_bad_versions_self_and_missing_dependencies() {
    let plugin = |name: &str, dependencies: &str| {
        format!(
            "export default {{ metadata: {{ name: \"{name}\", version: \"1.0.0\", dependencies: {dependencies} }}, execute() {{ return \"{name}\"; }} }};\n"
        )
    };
    let files = [
        ("users.js".to_string(), USERS.to_string()),
        (
            "pinned_wrong.js".into(),
            plugin("pinned-wrong", r#"["users@2.0.0"]"#),
        ),
        (
            "pinned_right.js".into(),
            plugin("pinned-right", r#"["users@1.0.0"]"#),
        ),
        ("selfish.js".into(), plugin("selfish", r#"["selfish"]"#)),
        ("needy.js".into(), plugin("needy", r#"["ghost"]"#)),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(file, text)| (file.as_str(), text.as_str()))
        .collect();
    let warden = WardenProcess::start(&files, &[], &["--no-load-all"]);
    let api = warden.admin();
    assert_eq!(api.load("users.js").await.0, 201);
    let before = api.get("/plugins").await;

    assert_error(
        &api.load("pinned_wrong.js").await,
        422,
        "dependency_version_mismatch",
    );
    assert_error(&api.load("selfish.js").await, 422, "self_dependency");
    assert_error(&api.load("needy.js").await, 422, "dependency_not_found");
    assert_eq!(api.get("/plugins").await, before);

    let (status, pinned) = api.load("pinned_right.js").await;
    assert_eq!(status, 201, "{pinned}");
    assert_eq!(pinned["dependencies"], json!(["users@1.0.0"]));
}

#[actix_rt::test]
async fn plugins_have_no_node_globals_or_built_in_modules() {
    let probe = r#"
export default {
  metadata: { name: "probe", version: "1.0.0" },
  async execute() {
    return {
      require: typeof require,
      process: typeof process,
      fetch: typeof fetch,
      module: typeof module,
      Buffer: typeof Buffer,
      XMLHttpRequest: typeof XMLHttpRequest,
      setTimeout: typeof setTimeout,
      console: typeof console,
    };
  },
};
"#;
    let uses_fs = r#"
import * as fs from "fs";
export default { metadata: { name: "uses-fs", version: "1.0.0" }, execute() { return typeof fs; } };
"#;
    let uses_node_fs = r#"
import { readFileSync } from "node:fs";
export default { metadata: { name: "uses-node-fs", version: "1.0.0" }, execute() { return typeof readFileSync; } };
"#;
    let warden = WardenProcess::start(
        &[
            ("probe.js", probe),
            ("uses_fs.js", uses_fs),
            ("uses_node_fs.js", uses_node_fs),
        ],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();
    assert_eq!(api.load("probe.js").await.0, 201);

    assert_eq!(
        api.execute("probe", json!(null)).await,
        (
            200,
            json!({ "result": {
                "require": "undefined",
                "process": "undefined",
                "fetch": "undefined",
                "module": "undefined",
                "Buffer": "undefined",
                "XMLHttpRequest": "undefined",
                "setTimeout": "function",
                "console": "object"
            } })
        )
    );
    assert_error(&api.load("uses_fs.js").await, 422, "invalid_plugin");
    assert_error(&api.load("uses_node_fs.js").await, 422, "invalid_plugin");
    assert_eq!(plugin_names(&api.get("/plugins").await.1), ["probe"]);
}

#[actix_rt::test]
async fn imports_work_inside_the_plugins_directory_only() {
    let lib = r#"export function shout(text) { return text.toUpperCase() + "!"; }"#;
    let math = r#"
import { shout } from "../lib.js";
export const double = (n: number): number => n * 2;
export const loudDouble = (n: number): string => shout(String(double(n)));
"#;
    let uses_lib = r#"
import { shout } from "./lib.js";
import { loudDouble } from "./helpers/math.ts";
export default {
  metadata: { name: "uses-lib", version: "1.0.0" },
  async execute(input) { return [shout(input.text), loudDouble(input.n)]; },
};
"#;
    let escapes = r#"
import { secret } from "../outside.js";
export default { metadata: { name: "escapes", version: "1.0.0" }, execute() { return secret; } };
"#;
    let escapes_deeper = r#"
import { secret } from "./helpers/../../outside.js";
export default { metadata: { name: "escapes-deeper", version: "1.0.0" }, execute() { return secret; } };
"#;
    let warden = WardenProcess::start(
        &[
            ("lib.js", lib),
            ("helpers/math.ts", math),
            ("uses_lib.js", uses_lib),
            ("escapes.js", escapes),
            ("escapes_deeper.js", escapes_deeper),
        ],
        &[],
        &["--no-load-all"],
    );
    // The file exists, so only confinement can refuse the import.
    warden.write_outside("outside.js", "export const secret = \"outside\";\n");
    let api = warden.admin();

    let (status, info) = api.load("uses_lib.js").await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(
        api.execute("uses-lib", json!({ "text": "hi", "n": 21 }))
            .await,
        (200, json!({ "result": ["HI!", "42!"] }))
    );

    assert_error(&api.load("escapes.js").await, 422, "invalid_plugin");
    assert_error(&api.load("escapes_deeper.js").await, 422, "invalid_plugin");
    assert_eq!(plugin_names(&api.get("/plugins").await.1), ["uses-lib"]);
}

#[actix_rt::test]
async fn timers_fire_and_cleared_timers_do_not() {
    let timers = r#"
const wait = (ms, ...args) => new Promise((resolve) => setTimeout((...got) => resolve(got), ms, ...args));
export default {
  metadata: { name: "timers", version: "1.0.0" },
  async execute() {
    const fired = [];
    const cancelled = setTimeout(() => fired.push("cancelled"), 10);
    clearTimeout(cancelled);
    setTimeout(() => fired.push("kept"), 30);
    const args = await wait(60, "a", 2);
    // Well past the cancelled timer's time: had it not been cleared, it would have fired first.
    await wait(60);
    fired.push("end");
    return { fired, args };
  },
};
"#;
    let warden = WardenProcess::start(&[("timers.js", timers)], &[], &[]);
    let api = warden.admin();
    assert_eq!(
        api.execute("timers", json!(null)).await,
        (
            200,
            json!({ "result": { "fired": ["kept", "end"], "args": ["a", 2] } })
        )
    );
}

#[actix_rt::test]
async fn a_waiting_execute_does_not_block_a_quick_one() {
    // The slow call records its start, then waits for a quick call to release it (or for a
    // timer, so a plugin that serializes calls still answers and the test fails on order).
    let concurrent = r#"
const steps = [];
let release = null;
export default {
  metadata: { name: "concurrent", version: "1.0.0" },
  async execute(input) {
    if (input.slow) {
      steps.push("slow-start");
      await Promise.race([
        new Promise((resolve) => { release = resolve; }),
        new Promise((resolve) => setTimeout(resolve, 3000)),
      ]);
      steps.push("slow-end");
      return steps.slice();
    }
    steps.push("quick");
    if (release !== null) release();
    return steps.slice();
  },
};
"#;
    let warden = WardenProcess::start(&[("concurrent.js", concurrent)], &[], &[]);
    let api = &warden.admin();

    let slow = api.execute("concurrent", json!({ "slow": true }));
    let quick = async move {
        let seen = &RefCell::new(Value::Null);
        let seen_slow_start = wait_until(PATIENCE, || async move {
            let (status, body) = api.execute("concurrent", json!({})).await;
            assert_eq!(status, 200, "{body}");
            let steps = body["result"].clone();
            let started = steps
                .as_array()
                .is_some_and(|steps| steps.contains(&json!("slow-start")));
            *seen.borrow_mut() = steps;
            started
        })
        .await;
        let seen = seen.borrow().clone();
        assert!(seen_slow_start, "the slow call never started: {seen}");
        seen
    };
    let ((slow_status, slow_body), quick_steps) = futures::join!(slow, quick);
    assert_eq!(slow_status, 200, "{slow_body}");

    // The quick call ran while the slow one was waiting...
    let quick_steps: Vec<Value> = quick_steps.as_array().unwrap().clone();
    assert_eq!(quick_steps.last(), Some(&json!("quick")));
    assert!(
        !quick_steps.contains(&json!("slow-end")),
        "the quick call waited for the slow one: {quick_steps:?}"
    );
    // ...and the slow one ended after it.
    let slow_steps = slow_body["result"].as_array().unwrap();
    let position = |step: &str| slow_steps.iter().rposition(|seen| seen == step);
    assert!(
        position("quick") < position("slow-end") && position("slow-start") < position("quick"),
        "{slow_steps:?}"
    );
}
