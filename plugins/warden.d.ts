// Warden plugin API: TypeScript declarations for plugin authors, following PLUGIN_API.md.
//
// Use it either way:
//   /// <reference path="./warden.d.ts" />              then write Warden.PluginContext, Warden.Plugin, ...
//   import type { Plugin, PluginContext } from "./warden";   (erased when Warden strips types)
//
// Types only: Warden strips them at load and never type-checks. Compile against "lib": ["es2022"]
// without "dom" or @types/node, since a plugin has none of those globals; the ones it has are below.

export as namespace Warden;

/** A plugin's identity, its dependencies and the resources it declares. */
export interface PluginMetadata {
  /** 1–63 chars of a-z 0-9 - _, starting with a letter or digit; "shared" and "warden" are reserved. */
  name: string;
  /** Semver version, e.g. "1.2.0". */
  version: string;
  /** What the plugin does, for people reading listings. */
  description?: string;
  /** Plugins this one calls: "name" or "name@1.4.0" (exact version, no ranges). */
  dependencies?: string[];
  /** PostgreSQL tables it may use, unprefixed, each optionally with a level:
   *  "orders" (owner: everything), "log:write" (SELECT/INSERT/UPDATE/DELETE), "rates:read" (SELECT). */
  allowedTables?: string[];
  /** Kafka topics it may use, unprefixed: "events" (all), "events:produce", "events:consume". */
  allowedTopics?: string[];
  /** S3 buckets it may use, unprefixed: "data" (all), "data:read" (download, exists, list, presign). */
  allowedBuckets?: string[];
}

/** The object a plugin module exports as default (or, failing that, as `plugin`). */
export interface Plugin {
  /** Required; a module without name and version is refused with InvalidPluginFormatError. */
  metadata: PluginMetadata;
  /** Runs once per (re)start, before any message; `this` is the plugin object. */
  initialize?(context: PluginContext): void | Promise<void>;
  /** Runs on unload and before reload. */
  cleanup?(): void | Promise<void>;
  /** The plugin's main entry point; input and result travel as JSON. */
  execute?(input?: any): unknown;
  /** HTTP routes served on the public listener under `/api/<plugin name>`. */
  routes?: Routes;
  /** The plugin's schema, in order. Warden applies the ones not yet recorded, all in one
   *  transaction, before `initialize`; an applied migration must never change (the load is
   *  refused with migration_changed): add a new one instead. Needs a configured database. */
  migrations?: readonly Migration[];
  /** Any other function is an export that dependents can call through their handle. */
  [method: string]: unknown;
}

/** One step of a plugin's schema. */
export interface Migration {
  /** 1–128 characters of A-Z a-z 0-9 _ . -, unique in the list; recorded once applied. */
  id: string;
  /** One or more statements separated by `;`, each checked like `executeCommand`, naming the
   *  plugin's own tables. */
  sql: string;
}

/** The methods a route may name; `*` is any method. A `HEAD` request is answered by `GET`. */
export type RouteMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "*";

/** A route's handler; `this` is the plugin object. */
export type RouteHandler = (request: HttpRequest) => HttpResponse | null | undefined | Promise<HttpResponse | null | undefined>;

/**
 * `"METHOD /path"` → a handler, or the name of one of the plugin's functions. Segments are
 * literals, `:name` (one segment) or a final `*name` (the rest, possibly empty). A literal wins
 * over `:name`, which wins over `*name`; a route's own method wins over `*`.
 */
export type Routes = { [route: `${RouteMethod} /${string}`]: RouteHandler | string };

/** What a route handler receives. */
export interface HttpRequest {
  /** The request's `x-request-id`, or one Warden made; sent back in `x-request-id`. */
  id: string;
  /** The request's own method (`HEAD` for a HEAD answered by a GET route). */
  method: string;
  /** The path after `/api/<plugin>`: starts with `/`, no query string, no trailing `/`. */
  path: string;
  /** `:name` and `*name` segments, percent-decoded. */
  params: Record<string, string>;
  /** The query decoded as a form; a repeated name maps to an array. */
  query: Record<string, string | string[]>;
  /** Lowercase names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** A string for text/*, JSON, form and untyped bodies, a Uint8Array otherwise, null when empty. */
  body: string | Uint8Array | null;
  /** The parsed body for `application/json` (a body that does not parse answers 400 first). */
  json?: any;
}

/**
 * What a handler returns: a non-empty subset of these keys. `status` defaults to 200; `json` is
 * sent as application/json; a string `body` as text/plain, a Uint8Array as application/octet-stream
 * (unless `headers` has a content-type). `null`/`undefined` answers 204. Throw an error with a
 * numeric `status` (400–599) and an optional string `code` to answer with them; any other thrown
 * error answers 500 `handler_failed`, its text only in the server's log.
 */
export interface HttpResponse {
  status?: number;
  headers?: Record<string, string>;
  json?: unknown;
  body?: string | Uint8Array;
}

/** What `initialize` receives: the plugin's only door to Warden and the outside world. */
export interface PluginContext {
  /** This plugin's name, as in its metadata. */
  pluginName: string;
  /** Events between plugins. */
  eventBus: EventBus;
  /** A handle to a declared dependency; an undeclared name throws UndeclaredDependencyError. */
  getDependency(name: string): DependencyHandle;
  /** Handles to every declared dependency, keyed by name. */
  getDependencies(): Map<string, DependencyHandle>;
  /** PostgreSQL, restricted to the declared tables; absent when no database is configured. */
  database?: DatabaseCapability;
  /** Kafka, restricted to the declared topics; absent when Kafka is not configured. */
  kafka?: KafkaCapability;
  /** S3, restricted to the declared buckets; absent when S3 is not configured. */
  s3?: S3Capability;
}

/** A listener: the event's data, and which event it was and which plugin (or "warden") emitted it. */
export type EventListener = (data: any, meta: { event: string; source: string }) => void | Promise<void>;

/** How a listener hears a cluster's events; on a single node it makes no difference. */
export interface ListenerOptions {
  everyNode?: boolean;
}

/** Patterns are event names or globs over ":"-separated segments: `*` is one segment, `**` any rest. */
export interface EventBus {
  /** Returns at once; data must be JSON-serializable (null when omitted); the emitter never hears itself.
   *  Data over WARDEN_PLUGIN_MAX_MESSAGE_BYTES (1 MiB) of JSON throws MessageTooLargeError and is never delivered.
   *  A burst waits for slow listeners against this plugin's own heap limit: past it, emit throws
   *  EventBacklogFullError, and the plugin's new calls wait while its listeners catch up. */
  emit(event: string, data?: unknown): void;
  /** Calls listener for every matching event; it runs without a `this`, so use an arrow function.
   *  In a cluster the plugin hears each event once, on one of its nodes; with `{ everyNode: true }`
   *  this listener hears it on every node instead (for caches and other per-node state). */
  on(pattern: string, listener: EventListener, options?: ListenerOptions): void;
  /** Like `on`, for the first matching event only (removed on the node where it fired). */
  once(pattern: string, listener: EventListener, options?: ListenerOptions): void;
  /** Removes that listener from the pattern, or every listener on it when none is given. */
  off(pattern: string, listener?: EventListener): void;
}

/** A declared dependency; every call is a message to its actor and returns a Promise. Arguments over
 *  WARDEN_PLUGIN_MAX_MESSAGE_BYTES of JSON reject with MessageTooLargeError; the dependency's `initialize`
 *  and `cleanup` are never reachable (`call("initialize")` rejects with MethodNotAllowedError). */
export interface DependencyHandle {
  /** The dependency's metadata. */
  metadata: PluginMetadata;
  /** Calls its `execute`. */
  execute(input?: unknown): Promise<any>;
  /** Calls its exported function `method` by name. */
  call(method: string, ...args: unknown[]): Promise<any>;
  /** Each exported function of the dependency, callable directly. */
  [exported: string]: any;
}

/** `context.database`: statements may touch only allowed tables; parameters are $1, $2, … as JSON values. */
export interface DatabaseCapability {
  /** Runs a query; rows come back as plain objects keyed by column name. A result over
   *  WARDEN_DATABASE_MAX_ROWS rows or WARDEN_DATABASE_MAX_RESULT_BYTES bytes rejects with
   *  ResultTooLargeError; a statement past the call time limit is cancelled (DatabaseError 57014). */
  executeQuery<Row extends object = Record<string, any>>(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Runs a command; resolves to the number of rows affected. */
  executeCommand(sql: string, params?: readonly unknown[]): Promise<number>;
  /** Runs `callback` with a transaction on one connection: it commits when the callback's
   *  promise resolves (to what it resolved to) and rolls back when it rejects (with the same
   *  rejection), when the plugin's call time limit passes since it began, and when the plugin
   *  is unloaded, reloaded or restarted. A failed commit (SQLSTATE 40001 under "serializable")
   *  rejects with DatabaseError. Statements on `context.database` inside the callback run
   *  outside the transaction. */
  transaction<T>(callback: (tx: Transaction) => T | Promise<T>, options?: TransactionOptions): Promise<T>;
  /** The tables this plugin may use, unprefixed, without levels. */
  getAllowedTables(): string[];
}

/** The statements of one transaction; after it ended they reject with TransactionClosedError. */
export interface Transaction {
  executeQuery<Row extends object = Record<string, any>>(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  executeCommand(sql: string, params?: readonly unknown[]): Promise<number>;
}

/** How a transaction runs; defaults "read committed" and false. */
export interface TransactionOptions {
  isolation?: "read committed" | "repeatable read" | "serializable";
  readOnly?: boolean;
}

/** A DatabaseError carries PostgreSQL's SQLSTATE in `code` (its message contains it too). */
export interface DatabaseError extends Error {
  name: "DatabaseError";
  code: string;
}

/** A message to send; key, value and headers are strings. */
export interface KafkaOutgoingMessage {
  /** Partitioning key. */
  key?: string;
  /** The payload. */
  value: string;
  /** Header names to values. */
  headers?: { [name: string]: string };
}

/** What `eachMessage` receives for each consumed message. */
export interface KafkaMessagePayload {
  /** The topic as the plugin names it (unprefixed). */
  topic: string;
  /** The partition it came from. */
  partition: number;
  /** The message itself. */
  message: {
    /** Key as a string, or null. */
    key: string | null;
    /** Value as a string, or null. */
    value: string | null;
    /** Header names to values. */
    headers: { [name: string]: string };
    /** Offset within the partition, as a decimal string (as KafkaJS gives it). */
    offset: string;
    /** Milliseconds since the epoch, as a decimal string (as KafkaJS gives it). */
    timestamp: string;
  };
}

/** `context.kafka`: topics and consumer groups are the plugin's own, unprefixed names. */
export interface KafkaCapability {
  /** Sends messages to an allowed topic, optionally through a named producer. */
  sendMessage(topic: string, messages: KafkaOutgoingMessage[], producerId?: string): Promise<void>;
  /** Creates a consumer in a group (the group id is prefixed like a topic); beyond the plugin's limit (WARDEN_PLUGIN_MAX_CONSUMERS) it throws ConsumerLimitError. */
  createConsumer(consumerId: string, groupId: string): Promise<void>;
  /** Subscribes a consumer; each offset is committed after `eachMessage` resolves (at least once). */
  subscribe(consumerId: string, topics: string[], eachMessage: (payload: KafkaMessagePayload) => void | Promise<void>): Promise<void>;
  /** Stops and removes a consumer. */
  disconnectConsumer(consumerId: string): Promise<void>;
  /**
   * Runs one ksqlDB statement: CREATE STREAM/TABLE (… AS SELECT), INSERT INTO, DROP STREAM/TABLE,
   * DESCRIBE or a pull query. Stream and table names are prefixed like topics, and KAFKA_TOPIC must
   * be an allowed topic (TopicAccessDeniedError); anything else throws SqlNotAllowedError, and
   * KsqlNotConfiguredError without ksqlDB.
   */
  executeKsqlStatement(statement: string): Promise<any>;
  /** The topics this plugin may use, unprefixed. */
  getAllowedTopics(): string[];
}

/** Downloaded bytes; `toString()` decodes UTF-8, as Node's Buffer does. */
export interface S3Body extends Uint8Array {
  /** The bytes decoded as UTF-8. */
  toString(): string;
}

/** `context.s3`: the bucket argument is always required and always last. */
export interface S3Capability {
  /** Stores body (a string or bytes) under key. */
  upload(key: string, body: string | Uint8Array, contentType: string, bucket: string): Promise<void>;
  /** Fetches the object stored under key. */
  download(key: string, bucket: string): Promise<S3Body>;
  /** Deletes the object stored under key. */
  delete(key: string, bucket: string): Promise<void>;
  /** Whether an object is stored under key. */
  exists(key: string, bucket: string): Promise<boolean>;
  /** The keys that start with prefix. */
  list(prefix: string, bucket: string): Promise<string[]>;
  /** A URL that fetches the object without credentials until it expires. */
  getPresignedUrl(key: string, expiresInSeconds: number, bucket: string): Promise<string>;
  /** The buckets this plugin may use, unprefixed. */
  getAllowedBuckets(): string[];
}

/** The `name` of the errors Warden throws to plugins; compare `error.name` against these. */
export type WardenErrorName =
  | "InvalidPluginFormatError"
  | "TableAccessDeniedError"
  | "SqlNotAllowedError"
  | "DatabaseError"
  | "ResultTooLargeError"
  | "TopicAccessDeniedError"
  | "KsqlNotConfiguredError"
  | "ConsumerLimitError"
  | "BucketAccessDeniedError"
  | "UndeclaredDependencyError"
  | "SelfDependencyError"
  | "CircularDependencyError"
  | "DependencyNotFoundError"
  | "DependencyVersionMismatchError"
  | "PluginUnloadedError"
  | "MessageTooLargeError"
  | "TimerLimitError"
  | "EventBacklogFullError"
  | "MethodNotAllowedError"
  | "MethodNotFoundError"
  | "TransactionClosedError";

// The globals a plugin has. Declared as merging declarations, so they coexist with "dom" or @types/node.
declare global {
  /** Warden's console: lines go to Warden's log tagged with the plugin name, arguments joined as Node does.
   *  Past WARDEN_PLUGIN_LOG_BYTES_PER_S (64 KiB) in one second, lines are dropped (never thrown) and one log line says how much. */
  interface Console {
    /** Logs at INFO. */
    log(...args: unknown[]): void;
    /** Logs at INFO. */
    info(...args: unknown[]): void;
    /** Logs at WARN. */
    warn(...args: unknown[]): void;
    /** Logs at ERROR. */
    error(...args: unknown[]): void;
  }
  /** The plugin's console. */
  var console: Console;
  /** Calls callback once after delay milliseconds; returns an id for clearTimeout. Timers nested 5 deep in
   *  timer callbacks wait at least 4 ms, as in browsers; past WARDEN_PLUGIN_MAX_TIMERS (1,000) pending timers
   *  it throws TimerLimitError. */
  function setTimeout<A extends unknown[]>(callback: (...args: A) => void, delay?: number, ...args: A): number;
  /** Cancels a pending setTimeout. */
  function clearTimeout(id: number | undefined): void;
  /** Calls callback every delay milliseconds, at least 4 ms apart; returns an id for clearInterval.
   *  Counts against WARDEN_PLUGIN_MAX_TIMERS like setTimeout. */
  function setInterval<A extends unknown[]>(callback: (...args: A) => void, delay?: number, ...args: A): number;
  /** Cancels a setInterval. */
  function clearInterval(id: number | undefined): void;
}
