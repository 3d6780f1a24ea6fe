// The JavaScript half of Warden's engine host. It runs once per engine, before the plugin's
// module, and receives `host`: the native functions through which the plugin reaches Warden.
// It keeps every JavaScript callback (timers, listeners, pending promises) in its own maps, so the
// Rust side never holds a handle into the heap. It returns the entry points the host calls.
// It is a module, compiled to bytecode once per process and loaded into every engine. Its entry
// points go on the global named `apiGlobal`, which no plugin code can replace or delete.
export default function bootstrap(host, apiGlobal) {

  // The built-ins the host's own paths use, taken before any plugin code runs: a plugin may
  // replace the globals in its heap, never what Warden relies on to check its answers.
  const builtins = {
    stringify: JSON.stringify,
    parse: JSON.parse,
    isInteger: Number.isInteger,
    keys: Object.keys,
    isArray: Array.isArray,
    resolve: Promise.resolve.bind(Promise),
    then: Promise.prototype.then,
    hasOwn: Object.prototype.hasOwnProperty,
    String,
    Promise,
  };
  const hasOwn = (object, key) => builtins.hasOwn.call(object, key);

  const state = {
    alive: true,
    plugin: null,
    context: null,
    nextTimer: 1,
    timers: new Map(),
    nextOp: 1,
    ops: new Map(),
    listeners: [],
    consumers: new Map(),
    exports: new Set(),
    // Route handlers by route index: a function of the `routes` map, or an export's name.
    routes: [],
  };

  function makeError(name, message, code) {
    const error = new Error(message);
    error.name = name;
    if (typeof code === "string") error.code = code;
    return error;
  }

  // Never throws: a thrown value whose name, message or string form cannot be read (a
  // `toString` that throws, an object without a prototype) still becomes an error.
  function errorJson(error) {
    let name = "Error";
    let message;
    try {
      if (error !== null && typeof error === "object") {
        if (typeof error.name === "string" && error.name) name = error.name;
        message = error.message === undefined ? builtins.String(error) : builtins.String(error.message);
      } else {
        message = builtins.String(error);
      }
    } catch (unprintable) {
      message = "a thrown value that cannot be printed";
    }
    return builtins.stringify({ name: builtins.String(name), message });
  }

  function throwHostError(errorText) {
    if (errorText !== undefined && errorText !== null) {
      const error = builtins.parse(errorText);
      throw makeError(error.name, error.message, error.code);
    }
  }

  function resultJson(value) {
    const text = builtins.stringify(value === undefined ? null : value);
    return text === undefined ? "null" : text;
  }

  function ensureAlive() {
    if (!state.alive) {
      throw makeError("PluginUnloadedError", "plugin '" + host.pluginName + "' has been unloaded");
    }
  }

  // console: arguments joined as Node prints them (strings as they are, the rest inspected).
  function inspect(value, depth) {
    if (typeof value === "string") return depth === 0 ? value : builtins.stringify(value);
    if (value === undefined) return "undefined";
    if (value === null) return "null";
    if (typeof value === "function") return "[Function: " + (value.name || "(anonymous)") + "]";
    if (typeof value === "bigint") return String(value) + "n";
    if (typeof value === "symbol") return value.toString();
    if (typeof value !== "object") return String(value);
    if (value instanceof Error) return value.stack ? value.name + ": " + value.message + "\n" + value.stack : value.name + ": " + value.message;
    if (depth > 2) return Array.isArray(value) ? "[Array]" : "[Object]";
    if (Array.isArray(value)) {
      return value.length === 0 ? "[]" : "[ " + value.map((item) => inspect(item, depth + 1)).join(", ") + " ]";
    }
    if (value instanceof Map) {
      const entries = Array.from(value.entries()).map(([key, item]) => inspect(key, depth + 1) + " => " + inspect(item, depth + 1));
      return "Map(" + value.size + ") {" + (entries.length ? " " + entries.join(", ") + " " : "") + "}";
    }
    if (value instanceof Uint8Array) return "Uint8Array(" + value.length + ") [ " + Array.from(value.slice(0, 50)).join(", ") + (value.length > 50 ? ", ..." : "") + " ]";
    const keys = Object.keys(value);
    if (keys.length === 0) return "{}";
    const body = keys.map((key) => (/^[A-Za-z_$][\w$]*$/.test(key) ? key : builtins.stringify(key)) + ": " + inspect(value[key], depth + 1));
    return "{ " + body.join(", ") + " }";
  }

  function format(args) {
    if (args.length === 0) return "";
    let rest = args;
    let head = "";
    if (typeof args[0] === "string" && args[0].indexOf("%") !== -1) {
      let index = 1;
      head = args[0].replace(/%[sdifjoO%]/g, (token) => {
        if (token === "%%") return "%";
        if (index >= args.length) return token;
        const argument = args[index++];
        switch (token) {
          case "%s": return typeof argument === "string" ? argument : inspect(argument, 1);
          case "%d": case "%i": return String(token === "%i" ? parseInt(argument, 10) : Number(argument));
          case "%f": return String(parseFloat(argument));
          case "%j": try { return builtins.stringify(argument); } catch (error) { return "[Circular]"; }
          default: return inspect(argument, 1);
        }
      });
      rest = args.slice(index);
      return [head].concat(rest.map((item) => inspect(item, 0))).join(" ");
    }
    return rest.map((item) => inspect(item, 0)).join(" ");
  }

  const console = {};
  for (const [method, level] of [["log", "info"], ["info", "info"], ["debug", "debug"], ["trace", "debug"], ["warn", "warn"], ["error", "error"]]) {
    console[method] = function (...args) { host.log(level, format(args)); };
  }
  Object.defineProperty(globalThis, "console", { value: console, writable: true, configurable: true });

  // Timers: the host counts them against the limit (TimerLimitError past it), clamps nested and
  // repeating ones to 4 ms, sleeps, then calls fireTimer; callbacks stay here.
  function startTimer(callback, delay, args, repeat) {
    if (typeof callback !== "function") throw new TypeError("the callback must be a function");
    const id = state.nextTimer++;
    throwHostError(host.timerStart(id, Math.max(0, Number(delay) || 0), repeat));
    state.timers.set(id, { callback, args, repeat });
    return id;
  }
  function clearTimer(id) {
    if (state.timers.delete(id)) host.timerClear(id);
  }
  globalThis.setTimeout = (callback, delay, ...args) => startTimer(callback, delay, args, false);
  globalThis.setInterval = (callback, delay, ...args) => startTimer(callback, delay, args, true);
  globalThis.clearTimeout = clearTimer;
  globalThis.clearInterval = clearTimer;

  // Event patterns: `*` is one segment, a final `**` is one or more segments.
  function patternMatches(pattern, event) {
    if (pattern === event) return true;
    if (pattern.indexOf("*") === -1) return false;
    const patternSegments = pattern.split(":");
    const eventSegments = event.split(":");
    for (let index = 0; index < patternSegments.length; index++) {
      const segment = patternSegments[index];
      if (segment === "**") return eventSegments.length > index;
      if (index >= eventSegments.length) return false;
      if (segment !== "*" && segment !== eventSegments[index]) return false;
    }
    return patternSegments.length === eventSegments.length;
  }

  function addListener(pattern, listener, once, options) {
    ensureAlive();
    if (typeof listener !== "function") throw new TypeError("the listener must be a function");
    if (options !== undefined && (options === null || typeof options !== "object")) {
      throw new TypeError("the listener options must be an object, like { everyNode: true }");
    }
    // In a cluster, an everyNode listener hears each event on every node; the others hear it
    // once per plugin, on one node. On a single node both hear every event.
    const everyNode = options !== undefined && options.everyNode === true;
    throwHostError(host.subscribe(String(pattern), everyNode));
    state.listeners.push({ pattern: String(pattern), listener, once, everyNode });
  }

  function removeListener(entry) {
    const index = state.listeners.indexOf(entry);
    if (index !== -1) {
      state.listeners.splice(index, 1);
      host.unsubscribe(entry.pattern, entry.everyNode);
    }
  }

  const eventBus = {
    emit(event, data) {
      ensureAlive();
      let text;
      try {
        text = builtins.stringify(data === undefined ? null : data);
      } catch (error) {
        throw new TypeError("event data must be JSON-serializable: " + error.message);
      }
      throwHostError(host.emit(String(event), text === undefined ? "null" : text));
    },
    on(pattern, listener, options) { addListener(pattern, listener, false, options); return eventBus; },
    once(pattern, listener, options) { addListener(pattern, listener, true, options); return eventBus; },
    off(pattern, listener) {
      ensureAlive();
      const matching = state.listeners.filter((entry) => entry.pattern === String(pattern) && (listener === undefined || entry.listener === listener));
      for (const entry of matching) removeListener(entry);
      return eventBus;
    },
  };

  // Asynchronous host operations: a promise here, the work in the host, settled by `settle`.
  // `start(id)` hands the operation to the host and returns its refusal, if any.
  function trackOperation(start) {
    const id = state.nextOp++;
    return new builtins.Promise((resolve, reject) => {
      state.ops.set(id, { resolve, reject });
      const refused = start(id);
      if (refused !== undefined && refused !== null) {
        state.ops.delete(id);
        const error = builtins.parse(refused);
        reject(makeError(error.name, error.message, error.code));
      }
    });
  }

  function serialize(value) {
    try {
      return { text: builtins.stringify(value) };
    } catch (error) {
      return { error: new TypeError("arguments must be JSON-serializable: " + error.message) };
    }
  }

  function startOperation(kind, payload) {
    ensureAlive();
    const serialized = serialize(payload);
    if (serialized.error) return Promise.reject(serialized.error);
    return trackOperation((id) => host.startOperation(id, kind, serialized.text));
  }

  // Calls into a dependency send their arguments as their own JSON text, so the host measures
  // them against the message limit (MessageTooLargeError) before it parses them, and refuses
  // `initialize` and `cleanup` (MethodNotAllowedError) whatever asked for them.
  function callDependency(dependency, method, args) {
    ensureAlive();
    const serialized = serialize(args);
    if (serialized.error) return Promise.reject(serialized.error);
    return trackOperation((id) => host.callDependency(id, dependency, method, serialized.text));
  }

  function deepFreeze(value) {
    if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
      Object.freeze(value);
      for (const key of Object.keys(value)) deepFreeze(value[key]);
    }
    return value;
  }

  function dependencyHandle(name) {
    ensureAlive();
    const description = builtins.parse(host.describeDependency(String(name)));
    if (description.error) throw makeError(description.error.name, description.error.message);
    const call = (method, args) => callDependency(description.metadata.name, method, args);
    const handle = {
      metadata: deepFreeze(description.metadata),
      execute: (input) => call(null, [input === undefined ? null : input]),
      call: (method, ...args) => call(String(method), args),
    };
    for (const exported of description.exports) {
      if (!(exported in handle)) handle[exported] = (...args) => call(exported, args);
    }
    // A handle never reaches the dependency's lifecycle: these exist only to be refused with
    // MethodNotAllowedError, by the host, like `call("initialize")`.
    for (const lifecycle of ["initialize", "cleanup"]) {
      if (!(lifecycle in handle)) Object.defineProperty(handle, lifecycle, { value: (...args) => call(lifecycle, args), enumerable: false });
    }
    return Object.freeze(handle);
  }

  // Base64 for binary S3 bodies: the host and the engine only exchange JSON text.
  const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const base64Lookup = new Uint8Array(128);
  for (let index = 0; index < base64Alphabet.length; index++) base64Lookup[base64Alphabet.charCodeAt(index)] = index;
  function toBase64(bytes) {
    let text = "";
    for (let index = 0; index < bytes.length; index += 3) {
      const a = bytes[index], b = bytes[index + 1], c = bytes[index + 2];
      text += base64Alphabet[a >> 2] + base64Alphabet[((a & 3) << 4) | ((b ?? 0) >> 4)];
      text += b === undefined ? "=" : base64Alphabet[((b & 15) << 2) | ((c ?? 0) >> 6)];
      text += c === undefined ? "=" : base64Alphabet[c & 63];
    }
    return text;
  }
  function fromBase64(text) {
    const clean = text.replace(/=+$/, "");
    const bytes = new Uint8Array(Math.floor((clean.length * 3) / 4));
    let output = 0;
    for (let index = 0; index < clean.length; index += 4) {
      const a = base64Lookup[clean.charCodeAt(index)], b = base64Lookup[clean.charCodeAt(index + 1)];
      const c = base64Lookup[clean.charCodeAt(index + 2)], d = base64Lookup[clean.charCodeAt(index + 3)];
      bytes[output++] = (a << 2) | (b >> 4);
      if (index + 2 < clean.length) bytes[output++] = ((b & 15) << 4) | (c >> 2);
      if (index + 3 < clean.length) bytes[output++] = ((c & 3) << 6) | d;
    }
    return bytes;
  }

  function requireString(value, what) {
    if (typeof value !== "string") throw new TypeError(what + " must be a string");
    return value;
  }
  function requireParams(params) {
    if (params === undefined || params === null) return [];
    if (!Array.isArray(params)) throw new TypeError("params must be an array");
    return params;
  }
  function allowed(kind) {
    ensureAlive();
    return builtins.parse(host.allowed(kind));
  }

  // Statements go to the host as {sql, params, transaction?}; argument errors reject like
  // the host's own errors do.
  function statement(kind, sql, params, transaction) {
    let payload;
    try {
      payload = { sql: requireString(sql, "sql"), params: requireParams(params) };
    } catch (error) {
      return Promise.reject(error);
    }
    if (transaction !== undefined) payload.transaction = transaction;
    return startOperation(kind, payload);
  }

  // A transaction is opened by the host on one connection; `tx` runs statements on it until
  // the callback settles, then the host commits or rolls back. The host also rolls it back
  // itself at the call time limit and at unload, so `tx` may find it closed at any time.
  function transaction(callback, options) {
    if (typeof callback !== "function") return Promise.reject(new TypeError("the transaction callback must be a function"));
    return builtins.then.call(startOperation("db.begin", { options: options === undefined ? null : options }), (id) => {
      let open = true;
      const closed = () => Promise.reject(makeError("TransactionClosedError", "the transaction has ended (it was committed or rolled back); use tx only inside its callback"));
      const tx = Object.freeze({
        executeQuery: (sql, params) => (open ? statement("db.query", sql, params, id) : closed()),
        executeCommand: (sql, params) => (open ? statement("db.command", sql, params, id) : closed()),
      });
      let outcome;
      try {
        outcome = callback(tx);
      } catch (error) {
        outcome = Promise.reject(error);
      }
      return builtins.then.call(builtins.resolve(outcome),
        (value) => {
          open = false;
          return builtins.then.call(startOperation("db.commit", { transaction: id }), () => value);
        },
        (error) => {
          open = false;
          // The callback's rejection reaches the caller unchanged, whatever the rollback did.
          const rethrow = () => { throw error; };
          return builtins.then.call(startOperation("db.rollback", { transaction: id }), rethrow, rethrow);
        });
    });
  }

  function buildDatabase() {
    return {
      executeQuery: (sql, params) => statement("db.query", sql, params),
      executeCommand: (sql, params) => statement("db.command", sql, params),
      transaction,
      getAllowedTables: () => allowed("tables"),
    };
  }

  function buildKafka() {
    return {
      sendMessage(topic, messages, producerId) {
        if (!Array.isArray(messages)) return Promise.reject(new TypeError("messages must be an array"));
        const normalized = [];
        for (const message of messages) {
          if (message === null || typeof message !== "object" || typeof message.value !== "string") {
            return Promise.reject(new TypeError("each message needs a string value"));
          }
          normalized.push({ key: message.key === undefined || message.key === null ? null : String(message.key), value: message.value, headers: message.headers || {} });
        }
        return startOperation("kafka.send", { topic: String(topic), messages: normalized, producerId: producerId === undefined ? null : String(producerId) });
      },
      createConsumer: (consumerId, groupId) => startOperation("kafka.createConsumer", { consumerId: String(consumerId), groupId: String(groupId) }),
      subscribe(consumerId, topics, eachMessage) {
        if (typeof eachMessage !== "function") return Promise.reject(new TypeError("eachMessage must be a function"));
        if (!Array.isArray(topics)) return Promise.reject(new TypeError("topics must be an array"));
        state.consumers.set(String(consumerId), eachMessage);
        return startOperation("kafka.subscribe", { consumerId: String(consumerId), topics: topics.map(String) });
      },
      disconnectConsumer(consumerId) {
        state.consumers.delete(String(consumerId));
        return startOperation("kafka.disconnect", { consumerId: String(consumerId) });
      },
      executeKsqlStatement: (statement) => startOperation("kafka.ksql", { statement: requireString(statement, "statement") }),
      getAllowedTopics: () => allowed("topics"),
    };
  }

  function buildStorage() {
    return {
      upload(key, body, contentType, bucket) {
        let payload;
        if (typeof body === "string") payload = { text: body };
        else if (body instanceof Uint8Array) payload = { base64: toBase64(body) };
        else if (body instanceof ArrayBuffer) payload = { base64: toBase64(new Uint8Array(body)) };
        else return Promise.reject(new TypeError("body must be a string or a Uint8Array"));
        return startOperation("s3.upload", Object.assign(payload, { key: String(key), contentType: contentType === undefined || contentType === null ? "application/octet-stream" : String(contentType), bucket: String(bucket) }));
      },
      download(key, bucket) {
        return startOperation("s3.download", { key: String(key), bucket: String(bucket) }).then((object) => {
          const bytes = fromBase64(object.base64);
          // Like Node's Buffer: toString() decodes the bytes as UTF-8.
          Object.defineProperty(bytes, "toString", { value: () => object.text, enumerable: false });
          return bytes;
        });
      },
      delete: (key, bucket) => startOperation("s3.delete", { key: String(key), bucket: String(bucket) }),
      exists: (key, bucket) => startOperation("s3.exists", { key: String(key), bucket: String(bucket) }),
      list: (prefix, bucket) => startOperation("s3.list", { prefix: prefix === undefined || prefix === null ? "" : String(prefix), bucket: String(bucket) }),
      getPresignedUrl: (key, expiresInSeconds, bucket) => startOperation("s3.presign", { key: String(key), expiresInSeconds: Number(expiresInSeconds), bucket: String(bucket) }),
      getAllowedBuckets: () => allowed("buckets"),
    };
  }

  function buildContext() {
    const capabilities = builtins.parse(host.capabilities());
    const context = {
      pluginName: host.pluginName,
      eventBus,
      getDependency: (name) => dependencyHandle(name),
      getDependencies: () => {
        ensureAlive();
        const map = new Map();
        for (const name of builtins.parse(host.declaredDependencies())) map.set(name, dependencyHandle(name));
        return map;
      },
    };
    if (capabilities.database) context.database = buildDatabase();
    if (capabilities.kafka) context.kafka = buildKafka();
    if (capabilities.s3) context.s3 = buildStorage();
    return context;
  }

  function complete(callId, outcome) {
    if (outcome !== null && (typeof outcome === "object" || typeof outcome === "function") && typeof outcome.then === "function") {
      // The prelude's own `then` on a real promise: a plugin's replaced `Promise.prototype.then`
      // or a thenable's `then` cannot skip the completion.
      builtins.then.call(builtins.resolve(outcome),
        (value) => {
          let text;
          try { text = resultJson(value); } catch (error) { host.complete(callId, false, errorJson(new TypeError("the result is not JSON-serializable: " + error.message))); return; }
          host.complete(callId, true, text);
        },
        (error) => host.complete(callId, false, errorJson(error)),
      );
      return;
    }
    let text;
    try { text = resultJson(outcome); } catch (error) { host.complete(callId, false, errorJson(new TypeError("the result is not JSON-serializable: " + error.message))); return; }
    host.complete(callId, true, text);
  }

  function reportListenerError(event, error) {
    host.listenerError(event, errorJson(error));
  }


  // HTTP routes. The host sends the request as JSON ({id, method, path, params, query, headers,
  // bodyKind, body}); the handler's response goes back in the form the public listener reads:
  // {kind: "json"|"text"|"bytes"|"empty", status, headers: [[name, value]], text|base64} (for
  // "json", `text` is the JSON itself, serialized once here rather than read and written again),
  // {kind: "error", status, code, message} for a thrown error with a status (and for a body
  // that is not JSON), or {kind: "invalid", message} for a value that is not a response.
  // A thrown error without a status rejects the call: the host answers 500 and logs it.
  const responseKeys = new Set(["status", "headers", "json", "body"]);

  function describeValue(value) {
    if (typeof value === "string") return "a string";
    if (Array.isArray(value)) return "an array";
    if (value instanceof Uint8Array) return "a Uint8Array";
    return typeof value === "object" ? "an object with keys [" + Object.keys(value).join(", ") + "]" : "a " + typeof value;
  }

  function invalidResponse(what) {
    return { kind: "invalid", message: "the handler returned " + what + "; return { json: … }, { body: … }, { status, headers, … } or nothing" };
  }

  function routeResponse(value) {
    if (value === undefined || value === null) return { kind: "empty", status: 204, headers: [] };
    if (typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) return invalidResponse(describeValue(value));
    const keys = builtins.keys(value);
    if (keys.length === 0 || keys.some((key) => !responseKeys.has(key))) return invalidResponse(describeValue(value));
    let status = 200;
    if (hasOwn(value, "status")) {
      status = value.status;
      if (!builtins.isInteger(status) || status < 200 || status > 599) return invalidResponse("status " + builtins.String(status) + " (use an integer from 200 to 599)");
    }
    const headers = [];
    if (hasOwn(value, "headers") && value.headers !== undefined && value.headers !== null) {
      if (typeof value.headers !== "object" || builtins.isArray(value.headers)) return invalidResponse("headers that are not an object of names to strings");
      for (const name of builtins.keys(value.headers)) {
        const header = value.headers[name];
        if (typeof header !== "string" && typeof header !== "number") return invalidResponse("a header '" + name + "' that is not a string");
        headers.push([name, builtins.String(header)]);
      }
    }
    if (hasOwn(value, "json") && hasOwn(value, "body")) return invalidResponse("both json and body (return one of them)");
    if (hasOwn(value, "json")) {
      const json = value.json;
      if (json === undefined || typeof json === "function" || typeof json === "symbol") return invalidResponse("json that JSON cannot hold (" + typeof json + ")");
      return { kind: "json", status, headers, text: builtins.stringify(json) };
    }
    if (hasOwn(value, "body")) {
      const body = value.body;
      if (typeof body === "string") return { kind: "text", status, headers, text: body };
      if (body instanceof Uint8Array) return { kind: "bytes", status, headers, base64: toBase64(body) };
      if (body instanceof ArrayBuffer) return { kind: "bytes", status, headers, base64: toBase64(new Uint8Array(body)) };
      if (body === undefined || body === null) return { kind: "empty", status, headers };
      return invalidResponse("a body that is " + describeValue(body) + " (use a string or a Uint8Array)");
    }
    return { kind: "empty", status, headers };
  }

  // A thrown value with a numeric status from 400 to 599 is an answer; anything else rethrows.
  function thrownResponse(error) {
    if (error !== null && typeof error === "object" && builtins.isInteger(error.status) && error.status >= 400 && error.status <= 599) {
      const code = typeof error.code === "string" && error.code ? error.code : "handler_error";
      const message = error.message === undefined ? "" : builtins.String(error.message);
      return { kind: "error", status: error.status, code, message };
    }
    throw error;
  }

  function buildRequest(wire) {
    let body = null;
    let json;
    if (wire.bodyKind === "text") body = wire.body;
    else if (wire.bodyKind === "bytes") body = fromBase64(wire.body);
    if (wire.isJson && typeof body === "string") {
      try { json = builtins.parse(body); } catch (error) { return { invalidJson: "the request body is not JSON: " + error.message }; }
    }
    return { request: { id: wire.id, method: wire.method, path: wire.path, params: wire.params, query: wire.query, headers: wire.headers, body, json } };
  }

  // A `routes` that cannot be read (a getter or proxy that throws) refuses the load.
  function describeRoutes(plugin) {
    try {
      return readRoutes(plugin);
    } catch (error) {
      state.routes = [];
      return { error: "the plugin object's 'routes' cannot be read: " + builtins.parse(errorJson(error)).message };
    }
  }

  function readRoutes(plugin) {
    const routes = plugin.routes;
    if (routes === undefined || routes === null) return { routes: [] };
    if (typeof routes !== "object" || Array.isArray(routes)) return { error: "the plugin object's 'routes' must be an object mapping \"METHOD /path\" to a handler" };
    const described = [];
    state.routes = [];
    for (const key of Object.keys(routes)) {
      const handler = routes[key];
      if (typeof handler === "function") { described.push({ key, handler: { function: true } }); state.routes.push(handler); }
      else if (typeof handler === "string") { described.push({ key, handler: { name: handler } }); state.routes.push(handler); }
      else { described.push({ key, handler: {} }); state.routes.push(null); }
    }
    return { routes: described };
  }

  // The `migrations` list as the host checks it: each entry's `id` and `sql` when they are
  // strings, and what they are when not. A list that cannot be read refuses the load.
  function describeMigrations(plugin) {
    try {
      const migrations = plugin.migrations;
      if (migrations === undefined || migrations === null) return null;
      if (!builtins.isArray(migrations)) return { error: "the plugin object's 'migrations' must be an array of { id, sql } objects" };
      const described = [];
      for (let index = 0; index < migrations.length; index++) {
        const entry = migrations[index];
        if (entry === null || typeof entry !== "object" || builtins.isArray(entry)) {
          described.push({ entryType: entry === null ? "null" : builtins.isArray(entry) ? "an array" : "a " + typeof entry });
          continue;
        }
        const id = entry.id;
        const sql = entry.sql;
        described.push({ id: typeof id === "string" ? id : null, idType: typeof id, sql: typeof sql === "string" ? sql : null, sqlType: typeof sql });
      }
      return described;
    } catch (error) {
      return { error: "the plugin object's 'migrations' cannot be read: " + builtins.parse(errorJson(error)).message };
    }
  }

  function adoptPlugin() {
    const namespace = state.namespace;
    state.namespace = null;
    let plugin = namespace.default;
    if (plugin === null || typeof plugin !== "object") plugin = namespace.plugin;
    if (plugin === null || typeof plugin !== "object") {
      return builtins.stringify({ error: "the module has no default export or 'plugin' export that is an object" });
    }
    const metadata = plugin.metadata;
    if (metadata === null || typeof metadata !== "object") {
      return builtins.stringify({ error: "the plugin object has no 'metadata' object" });
    }
    let metadataJson;
    try { metadataJson = builtins.parse(builtins.stringify(metadata)); } catch (error) { return builtins.stringify({ error: "metadata is not JSON: " + error.message }); }
    state.plugin = plugin;
    const exports = [];
    // Own functions, plus those of a class prototype when the plugin is a class instance.
    const prototype = Object.getPrototypeOf(plugin);
    const inherited = prototype && prototype !== Object.prototype ? Object.getOwnPropertyNames(prototype) : [];
    for (const key of new Set([...builtins.keys(plugin), ...inherited])) {
      if (key === "constructor" || key === "metadata" || key === "routes" || key === "migrations") continue;
      if (typeof plugin[key] === "function" && key !== "initialize" && key !== "cleanup" && key !== "execute") exports.push(key);
    }
    exports.sort();
    state.exports = new Set(exports);
    const routes = describeRoutes(plugin);
    if (routes.error) return builtins.stringify({ error: routes.error });
    return builtins.stringify({ metadata: metadataJson, exports, routes: routes.routes, migrations: describeMigrations(plugin), executable: typeof plugin.execute === "function", cleanup: typeof plugin.cleanup === "function" });
  }


  const api = {
    // Validates the module's plugin object and describes it to the host.
    // The plugin's name is known once its metadata is read; messages use it from then on.
    rename(name) {
      host.pluginName = name;
    },
    keepNamespace(namespace) {
      state.namespace = namespace;
    },
    // A plugin object whose properties throw when read (getters, proxies) is an invalid
    // module, not an engine fault.
    adopt() {
      try {
        return adoptPlugin();
      } catch (error) {
        return builtins.stringify({ error: "the plugin object cannot be read: " + builtins.parse(errorJson(error)).message });
      }
    },
    initialize(callId) {
      state.context = buildContext();
      try {
        complete(callId, typeof state.plugin.initialize === "function" ? state.plugin.initialize(state.context) : undefined);
      } catch (error) {
        host.complete(callId, false, errorJson(error));
      }
    },
    cleanup(callId) {
      try {
        complete(callId, typeof state.plugin.cleanup === "function" ? state.plugin.cleanup() : undefined);
      } catch (error) {
        host.complete(callId, false, errorJson(error));
      }
    },
    invoke(callId, method, argsJson) {
      try {
        const name = method === null || method === undefined ? "execute" : method;
        // Only `execute` and the exports: never a lifecycle function or an inherited property.
        const target = name === "execute" || state.exports.has(name) ? state.plugin[name] : undefined;
        if (typeof target !== "function") {
          host.complete(callId, false, builtins.stringify(name === "execute"
            ? { name: "NotExecutableError", message: "plugin '" + host.pluginName + "' has no execute function" }
            : { name: "MethodNotFoundError", message: "plugin '" + host.pluginName + "' exports no function '" + name + "'" }));
          return;
        }
        complete(callId, target.apply(state.plugin, builtins.parse(argsJson)));
      } catch (error) {
        host.complete(callId, false, errorJson(error));
      }
    },
    route(callId, index, requestJson) {
      try {
        const built = buildRequest(builtins.parse(requestJson));
        if (built.invalidJson !== undefined) {
          complete(callId, { kind: "error", status: 400, code: "invalid_json", message: built.invalidJson });
          return;
        }
        const entry = state.routes[index];
        // A named handler is looked up now, so that it is the plugin's function as it is.
        const handler = typeof entry === "string" && state.exports.has(entry) ? state.plugin[entry] : entry;
        if (typeof handler !== "function") {
          host.complete(callId, false, builtins.stringify({ name: "MethodNotFoundError", message: "route #" + index + " has no handler" }));
          return;
        }
        let outcome;
        try {
          outcome = handler.call(state.plugin, built.request);
        } catch (error) {
          complete(callId, thrownResponse(error));
          return;
        }
        if (outcome !== null && (typeof outcome === "object" || typeof outcome === "function") && typeof outcome.then === "function") {
          // Adopted into a real promise, so that the response passes the checks whatever the
          // plugin's own `then` does.
          complete(callId, builtins.then.call(builtins.resolve(outcome), routeResponse, thrownResponse));
        } else {
          complete(callId, routeResponse(outcome));
        }
      } catch (error) {
        host.complete(callId, false, errorJson(error));
      }
    },
    consume(callId, consumerId, payloadJson) {
      const handler = state.consumers.get(consumerId);
      if (handler === undefined || !state.alive) {
        host.complete(callId, true, "null");
        return;
      }
      try {
        complete(callId, handler(builtins.parse(payloadJson)));
      } catch (error) {
        host.complete(callId, false, errorJson(error));
      }
    },
    // With a callId, the host waits for the listeners' promises (events from another node count
    // as handled only when their listeners are done); completes with null once all settled.
    deliver(batchJson, callId) {
      const tracked = callId !== undefined;
      let waiting = 1;
      const settled = () => {
        waiting -= 1;
        if (waiting === 0) host.complete(callId, true, "null");
      };
      if (!state.alive) {
        if (tracked) settled();
        return;
      }
      const batch = builtins.parse(batchJson);
      for (const [event, source, data, reach] of batch) {
        const listeners = state.listeners.slice();
        for (const entry of listeners) {
          // reach: absent for this node's own events, 1 once per plugin, 2 on every node.
          if (reach !== undefined && entry.everyNode !== (reach === 2)) continue;
          if (!patternMatches(entry.pattern, event)) continue;
          if (entry.once) removeListener(entry);
          try {
            const outcome = entry.listener.call(undefined, data, { event, source });
            if (outcome !== null && typeof outcome === "object" && typeof outcome.then === "function") {
              outcome.then(undefined, (error) => reportListenerError(event, error));
              if (tracked) {
                waiting += 1;
                builtins.then.call(builtins.resolve(outcome), settled, settled);
              }
            }
          } catch (error) {
            reportListenerError(event, error);
          }
        }
      }
      if (tracked) settled();
    },
    fireTimer(id) {
      const timer = state.timers.get(id);
      if (timer === undefined || !state.alive) return;
      // The host re-arms a repeating timer by itself.
      if (!timer.repeat) state.timers.delete(id);
      try {
        const outcome = timer.callback.apply(undefined, timer.args);
        if (outcome !== null && typeof outcome === "object" && typeof outcome.then === "function") {
          outcome.then(undefined, (error) => reportListenerError("timer", error));
        }
      } catch (error) {
        reportListenerError("timer", error);
      }
    },
    settle(id, ok, payload) {
      const operation = state.ops.get(id);
      if (operation === undefined) return;
      state.ops.delete(id);
      if (ok) {
        operation.resolve(builtins.parse(payload));
      } else {
        const error = builtins.parse(payload);
        operation.reject(makeError(error.name, error.message, error.code));
      }
    },
    dispose() {
      state.alive = false;
      state.timers.clear();
      state.listeners = [];
      state.consumers.clear();
      for (const operation of state.ops.values()) {
        operation.reject(makeError("PluginUnloadedError", "plugin '" + host.pluginName + "' has been unloaded"));
      }
      state.ops.clear();
    },
  };
  Object.defineProperty(globalThis, apiGlobal, { value: api, writable: false, configurable: false, enumerable: false });
}
