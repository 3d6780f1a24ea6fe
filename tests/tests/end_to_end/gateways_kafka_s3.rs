//! Kafka through `context.kafka` and S3 through `context.s3` against the local stack (`just
//! infra-up`): messages, topics, objects, presigned URLs and per-plugin keys. Names are random per
//! test, as in `gateways`.

use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::{local_stack_env, wait_until, Admin};

use crate::gateways::{
    assert_plugin_error, run, sorted_strings, start, unique, unload, BACKEND_PATIENCE,
};

/// A plugin named `name` allowed the topic `events` whose consumer (group `g1`) records every
/// message it receives. `execute` actions: `send` (`count` messages `k<i>`/`v<i>` with a header
/// `i`, or one `value`), `received`, `sendTo` (`topic`), `subscribeTo` (`topic`), `ksql`,
/// `allowedTopics`.
fn kafka_plugin(name: &str) -> String {
    r#"
const received = [];
export default {
  metadata: { name: "__NAME__", version: "1.0.0", allowedTopics: ["events"] },
  async initialize(context) {
    this.kafka = context.kafka;
    if (this.kafka === undefined) throw new Error("context.kafka is missing");
    await this.kafka.createConsumer("recorder", "g1");
    await this.kafka.subscribe("recorder", ["events"], async (payload) => { received.push(payload); });
  },
  async execute(input) {
    switch (input.action) {
      case "send": {
        const messages = [];
        if (input.value !== undefined) messages.push({ value: input.value });
        for (let i = 0; i < (input.count || 0); i++) {
          messages.push({ key: "k" + i, value: "v" + i, headers: { i: String(i) } });
        }
        await this.kafka.sendMessage("events", messages);
        return messages.length;
      }
      case "received": return received;
      case "sendTo": return this.kafka.sendMessage(input.topic, [{ value: "intruder" }]);
      case "subscribeTo": {
        await this.kafka.createConsumer("intruder", "intruders");
        return this.kafka.subscribe("intruder", [input.topic], async () => {});
      }
      case "ksql":
        return this.kafka.executeKsqlStatement(
          "CREATE STREAM evs (v VARCHAR) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');");
      case "allowedTopics": return this.kafka.getAllowedTopics();
      default: throw new TypeError("unknown action " + input.action);
    }
  },
};
"#
    .replace("__NAME__", name)
}

/// What `name`'s consumer has received so far.
async fn received(api: &Admin, name: &str) -> Vec<Value> {
    run(api, name, json!({ "action": "received" }))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `name`'s consumer has received at least `count` messages, and answers them.
async fn wait_for_messages(api: &Admin, name: &str, count: usize) -> Vec<Value> {
    let arrived = wait_until(BACKEND_PATIENCE, || async move {
        received(api, name).await.len() >= count
    })
    .await;
    let messages = received(api, name).await;
    assert!(
        arrived,
        "{name} received {} of {count} messages: {messages:?}",
        messages.len()
    );
    messages
}

#[actix_rt::test]
async fn kafka_messages_come_back_in_order_with_keys_headers_and_the_plugins_topic_name() {
    let name = unique("kafka");
    let plugin = kafka_plugin(&name);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    let info = api.plugin(&name).await;
    assert_eq!(
        info["resources"]["topics"],
        json!([{ "name": "events", "physical": format!("{name}_events"), "access": "all" }]),
        "{info}"
    );
    assert_eq!(
        run(api, &name, json!({ "action": "allowedTopics" })).await,
        json!(["events"])
    );

    assert_eq!(
        run(api, &name, json!({ "action": "send", "count": 20 })).await,
        json!(20)
    );
    let messages = wait_for_messages(api, &name, 20).await;
    assert_eq!(messages.len(), 20, "each message once: {messages:?}");
    // Kafka orders messages within a partition; every message of one partition must come in
    // the order sent, with growing offsets (one partition per topic makes that the total order).
    let mut last_seen: std::collections::HashMap<String, (i64, i64)> = Default::default();
    for payload in &messages {
        assert_eq!(
            payload["topic"], "events",
            "the topic is unprefixed: {payload}"
        );
        let message = &payload["message"];
        let key = message["key"]
            .as_str()
            .unwrap_or_else(|| panic!("{payload}"));
        let index: i64 = key[1..].parse().unwrap();
        assert_eq!(message["value"], format!("v{index}"), "{payload}");
        assert_eq!(
            message["headers"],
            json!({ "i": index.to_string() }),
            "{payload}"
        );
        assert!(!message["timestamp"].is_null(), "{payload}");
        let offset = match &message["offset"] {
            Value::String(text) => text.parse::<i64>().ok(),
            other => other.as_i64(),
        }
        .unwrap_or_else(|| panic!("no offset: {payload}"));
        let partition = payload["partition"].to_string();
        if let Some((previous_index, previous_offset)) = last_seen.get(&partition) {
            assert!(
                index > *previous_index && offset > *previous_offset,
                "out of order in partition {partition}: {messages:?}"
            );
        }
        last_seen.insert(partition, (index, offset));
    }
    let mut keys: Vec<&str> = messages
        .iter()
        .map(|payload| payload["message"]["key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|index| format!("k{index}")).collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);

    assert_plugin_error(
        &api.execute(&name, json!({ "action": "sendTo", "topic": "elsewhere" }))
            .await,
        "TopicAccessDeniedError",
    );
    assert_plugin_error(
        &api.execute(
            &name,
            json!({ "action": "subscribeTo", "topic": "elsewhere" }),
        )
        .await,
        "TopicAccessDeniedError",
    );
    // The local stack has no ksqlDB.
    assert_plugin_error(
        &api.execute(&name, json!({ "action": "ksql" })).await,
        "KsqlNotConfiguredError",
    );

    unload(api, &name).await;
}

#[actix_rt::test]
async fn kafka_topics_of_two_plugins_are_apart() {
    let first = unique("kafkaa");
    let second = unique("kafkab");
    let (first_plugin, second_plugin) = (kafka_plugin(&first), kafka_plugin(&second));
    let warden = start(&[(&first, &first_plugin), (&second, &second_plugin)], &[]);
    let api = &warden.admin();

    run(api, &first, json!({ "action": "send", "count": 3 })).await;
    wait_for_messages(api, &first, 3).await;
    // The second plugin's `events` is its own topic: once its own message arrives, it has
    // seen nothing of the first plugin's.
    run(api, &second, json!({ "action": "send", "value": "mine" })).await;
    let messages = wait_for_messages(api, &second, 1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["message"]["value"], "mine");
    assert_eq!(messages[0]["topic"], "events");

    let physical = format!("{first}_events");
    assert_plugin_error(
        &api.execute(&second, json!({ "action": "sendTo", "topic": physical }))
            .await,
        "TopicAccessDeniedError",
    );
    assert_plugin_error(
        &api.execute(
            &second,
            json!({ "action": "subscribeTo", "topic": physical }),
        )
        .await,
        "TopicAccessDeniedError",
    );
    assert_eq!(
        received(api, &first).await.len(),
        3,
        "nothing reached the first plugin"
    );

    unload(api, &first).await;
    unload(api, &second).await;
}

// --- S3 ---------------------------------------------------------------------------------------

/// A plugin named `name` allowed the bucket `data`. `execute` takes `{action, key, bucket?}`
/// (the bucket defaults to `data`): `uploadText` (`text`), `downloadText`, `uploadAllBytes` (a
/// Uint8Array of 0..=255), `downloadBytes`, `exists`, `list` (`prefix`), `delete`, `presign`,
/// `allowedBuckets`.
fn s3_plugin(name: &str) -> String {
    r#"
export default {
  metadata: { name: "__NAME__", version: "1.0.0", allowedBuckets: ["data"] },
  async initialize(context) {
    this.s3 = context.s3;
    if (this.s3 === undefined) throw new Error("context.s3 is missing");
  },
  async execute(input) {
    const bucket = input.bucket === undefined ? "data" : input.bucket;
    switch (input.action) {
      case "uploadText": return this.s3.upload(input.key, input.text, "text/plain; charset=utf-8", bucket);
      case "downloadText": return (await this.s3.download(input.key, bucket)).toString();
      case "uploadAllBytes": {
        const bytes = new Uint8Array(256);
        for (let i = 0; i < 256; i++) bytes[i] = i;
        return this.s3.upload(input.key, bytes, "application/octet-stream", bucket);
      }
      case "downloadBytes": {
        const body = await this.s3.download(input.key, bucket);
        return { isUint8Array: body instanceof Uint8Array, bytes: Array.from(body) };
      }
      case "exists": return this.s3.exists(input.key, bucket);
      case "list": return this.s3.list(input.prefix, bucket);
      case "delete": return this.s3.delete(input.key, bucket);
      case "presign": return this.s3.getPresignedUrl(input.key, 300, bucket);
      case "allowedBuckets": return this.s3.getAllowedBuckets();
      default: throw new TypeError("unknown action " + input.action);
    }
  },
};
"#
    .replace("__NAME__", name)
}

/// Runs an S3 action of [`s3_plugin`] on `key`.
async fn s3(api: &Admin, name: &str, action: &str, key: &str) -> Value {
    run(api, name, json!({ "action": action, "key": key })).await
}

/// GETs `url` with no credentials at all; answers the status and the body.
async fn fetch_anonymously(url: &str) -> (u16, Vec<u8>) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url} failed: {error}"));
    let body = response
        .body()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: cannot read the body: {error}"));
    (response.status().as_u16(), body.to_vec())
}

#[actix_rt::test]
async fn s3_objects_round_trip_as_text_and_bytes_and_presigned_urls_need_no_credentials() {
    let name = unique("s3_store");
    let plugin = s3_plugin(&name);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    let info = api.plugin(&name).await;
    assert_eq!(
        info["resources"]["buckets"],
        json!([{ "name": "data", "physical": format!("{}-data", name.replace('_', "-")), "access": "all" }]),
        "{info}"
    );
    assert_eq!(
        run(api, &name, json!({ "action": "allowedBuckets" })).await,
        json!(["data"])
    );

    let text = "héllo wörld ✓ — 你好";
    run(
        api,
        &name,
        json!({ "action": "uploadText", "key": "notes/hello.txt", "text": text }),
    )
    .await;
    assert_eq!(
        s3(api, &name, "downloadText", "notes/hello.txt").await,
        text
    );

    let all_bytes: Vec<u8> = (0..=255).collect();
    s3(api, &name, "uploadAllBytes", "bin/all.bin").await;
    assert_eq!(
        s3(api, &name, "downloadBytes", "bin/all.bin").await,
        json!({ "isUint8Array": true, "bytes": all_bytes })
    );

    assert_eq!(
        s3(api, &name, "exists", "notes/hello.txt").await,
        json!(true)
    );
    assert_eq!(
        s3(api, &name, "exists", "notes/missing.txt").await,
        json!(false)
    );

    run(
        api,
        &name,
        json!({ "action": "uploadText", "key": "notes/second.txt", "text": "2" }),
    )
    .await;
    let list = |prefix: &'static str| {
        let name = name.clone();
        async move {
            sorted_strings(&run(api, &name, json!({ "action": "list", "prefix": prefix })).await)
        }
    };
    assert_eq!(
        list("notes/").await,
        ["notes/hello.txt", "notes/second.txt"]
    );
    assert_eq!(list("bin/").await, ["bin/all.bin"]);
    assert_eq!(
        list("").await,
        ["bin/all.bin", "notes/hello.txt", "notes/second.txt"]
    );

    s3(api, &name, "delete", "notes/second.txt").await;
    assert_eq!(
        s3(api, &name, "exists", "notes/second.txt").await,
        json!(false)
    );
    assert_eq!(list("notes/").await, ["notes/hello.txt"]);

    // A presigned URL works for anyone holding it: this client has no credentials.
    for (key, expected) in [
        ("bin/all.bin", all_bytes.clone()),
        ("notes/hello.txt", text.as_bytes().to_vec()),
    ] {
        let url = s3(api, &name, "presign", key).await;
        let url = url.as_str().unwrap_or_else(|| panic!("not a URL: {url}"));
        let (status, body) = fetch_anonymously(url).await;
        assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body, expected, "the body behind {url}");
    }

    for key in ["bin/all.bin", "notes/hello.txt"] {
        s3(api, &name, "delete", key).await;
    }
    assert_eq!(list("").await, Vec::<String>::new());
    unload(api, &name).await;
}

#[actix_rt::test]
async fn s3_denies_undeclared_buckets_and_another_plugins_bucket() {
    let owner = unique("s3owner");
    let other = unique("s3other");
    let (owner_plugin, other_plugin) = (s3_plugin(&owner), s3_plugin(&other));
    let warden = start(&[(&owner, &owner_plugin), (&other, &other_plugin)], &[]);
    let api = &warden.admin();
    run(
        api,
        &owner,
        json!({ "action": "uploadText", "key": "secret.txt", "text": "the owner's" }),
    )
    .await;

    // S3 forbids `_`: the plugin name's `_` became `-` in its bucket's physical name.
    let owner_physical = format!("{}-data", owner.replace('_', "-"));
    for bucket in ["other", owner_physical.as_str()] {
        for action in [
            "uploadText",
            "downloadText",
            "exists",
            "list",
            "delete",
            "presign",
        ] {
            let answer = api
                .execute(
                    &other,
                    json!({ "action": action, "key": "secret.txt", "text": "x", "prefix": "", "bucket": bucket }),
                )
                .await;
            assert_eq!(
                answer.1["error"]["name"].as_str(),
                Some("BucketAccessDeniedError"),
                "{action} on bucket {bucket:?} was not denied: {answer:?}"
            );
            assert_plugin_error(&answer, "BucketAccessDeniedError");
        }
    }
    // The other plugin's `data` is its own bucket, which does not hold the owner's object.
    assert_eq!(s3(api, &other, "exists", "secret.txt").await, json!(false));
    assert_eq!(
        run(api, &other, json!({ "action": "list", "prefix": "" })).await,
        json!([])
    );
    assert_eq!(
        s3(api, &owner, "downloadText", "secret.txt").await,
        "the owner's"
    );

    s3(api, &owner, "delete", "secret.txt").await;
    unload(api, &owner).await;
    unload(api, &other).await;
}

/// The ids of the Garage keys named `name`, through the admin API of infra/local.env.
async fn garage_keys_named(name: &str) -> Vec<String> {
    let settings = local_stack_env();
    let setting = |key: &str| {
        settings
            .iter()
            .find(|(found, _)| found == key)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| {
                panic!("infra/local.env has no {key}: run `just infra-up` again to write it")
            })
    };
    let (url, token) = (
        setting("WARDEN_S3_ADMIN_URL"),
        setting("WARDEN_S3_ADMIN_TOKEN"),
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut response = client
        .get(format!("{}/v2/ListKeys", url.trim_end_matches('/')))
        .bearer_auth(token)
        .send()
        .await
        .expect("ListKeys");
    assert_eq!(response.status().as_u16(), 200, "ListKeys failed");
    let keys: Value = response.json().await.expect("ListKeys answers JSON");
    keys.as_array()
        .expect("ListKeys answers a list")
        .iter()
        .filter(|key| key["name"] == name)
        .filter_map(|key| key["id"].as_str().map(str::to_string))
        .collect()
}

#[actix_rt::test]
async fn s3_presigned_urls_carry_only_the_plugins_own_key() {
    let first = unique("s3keys");
    let second = unique("s3keys");
    let (first_plugin, second_plugin) = (s3_plugin(&first), s3_plugin(&second));
    let warden = start(&[(&first, &first_plugin), (&second, &second_plugin)], &[]);
    let api = &warden.admin();
    for (name, text) in [(&first, "the first's"), (&second, "the second's")] {
        run(
            api,
            name,
            json!({ "action": "uploadText", "key": "secret.txt", "text": text }),
        )
        .await;
    }
    let key_name = format!("warden-plugin-{first}");
    assert_eq!(
        garage_keys_named(&key_name).await.len(),
        1,
        "one key per plugin"
    );

    let url = s3(api, &first, "presign", "secret.txt").await;
    let url = url.as_str().expect("a url").to_string();
    assert_eq!(
        fetch_anonymously(&url).await,
        (200, b"the first's".to_vec())
    );
    // The attacker edits the bucket in the URL to the other plugin's: refused, since neither
    // the signature nor the key behind it covers that bucket.
    let (first_physical, second_physical) = (
        format!("{}-data", first.replace('_', "-")),
        format!("{}-data", second.replace('_', "-")),
    );
    let edited = url.replacen(
        &format!("/{first_physical}/"),
        &format!("/{second_physical}/"),
        1,
    );
    assert_ne!(edited, url, "the url names the bucket in its path: {url}");
    assert_eq!(fetch_anonymously(&edited).await.0, 403);

    // Unloading the plugin deletes its key.
    s3(api, &first, "delete", "secret.txt").await;
    unload(api, &first).await;
    assert!(
        wait_until(BACKEND_PATIENCE, || async {
            garage_keys_named(&key_name).await.is_empty()
        })
        .await,
        "the key of an unloaded plugin is still there"
    );
    s3(api, &second, "delete", "secret.txt").await;
    unload(api, &second).await;
}

// --- Readiness and durability -----------------------------------------------------------------
