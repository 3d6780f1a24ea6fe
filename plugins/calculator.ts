// calculator: a TypeScript plugin that depends on greeter. Warden strips the types at load and never
// checks them, so only erasable syntax is used here: interfaces, annotations and `as` casts (enums,
// namespaces and decorators would need generated code). No imports: the small types it needs are local.

interface Greeter {
  greet(name: string): Promise<string>;
}

interface Context {
  eventBus: { on(pattern: string, listener: (data: unknown, meta: { event: string; source: string }) => void): unknown };
  getDependency(name: string): unknown;
}

interface Input {
  operation: string;
  a: number;
  b: number;
}

function divisionByZero(a: number): Error {
  const error = new Error(`cannot divide ${a} by zero`);
  error.name = "DivisionByZeroError"; // the name is what reaches callers, so they can tell this case apart
  return error;
}

// Kept at module level, not on the plugin object: every function on that object becomes an export that
// dependents can call. A Map, so names like "toString" are not mistaken for operations.
const operations = new Map<string, (a: number, b: number) => number>([
  ["add", (a, b) => a + b],
  ["subtract", (a, b) => a - b],
  ["multiply", (a, b) => a * b],
  ["divide", (a, b) => { if (b === 0) throw divisionByZero(a); return a / b; }],
]);

export default {
  metadata: { name: "calculator", version: "1.0.0", description: "Arithmetic, with a greeting", dependencies: ["greeter"] },

  context: null as Context | null,
  greeter: null as Greeter | null,
  greetingsSeen: 0,

  async initialize(context: Context): Promise<void> {
    this.context = context;
    this.greeter = context.getDependency("greeter") as Greeter;
    this.greetingsSeen = 0;
    // Warden calls listeners without a `this`, so an arrow function keeps hold of the plugin object.
    context.eventBus.on("greeter:*", () => { this.greetingsSeen += 1; });
  },

  async execute(input: Input): Promise<{ result: number; greeting: string }> {
    const { operation, a, b } = (input ?? {}) as Partial<Input>;
    const apply = operations.get(operation as string);
    if (apply === undefined) throw new TypeError(`unknown operation '${operation}': use ${[...operations.keys()].join(", ")}`);
    if (typeof a !== "number" || typeof b !== "number") throw new TypeError("a and b must be numbers");
    const result = apply(a, b); // before the greeting, so a bad request costs no call to greeter
    const greeting = await (this.greeter as Greeter).greet("calculator");
    return { result, greeting };
  },

  // Exported to dependents: how many greeter events this instance has heard since it (re)started.
  stats(): { greetingsSeen: number } {
    return { greetingsSeen: this.greetingsSeen };
  },
};
