// greeter: the seed system's example plugin, ported to Warden unchanged in shape.
// It greets by name and tells other plugins about each greeting through the event bus.

export default {
  metadata: {
    name: "greeter",
    version: "1.0.0",
    description: "Greets by name and announces each greeting as a greeter:greeted event",
  },

  async initialize(context) {
    // Warden calls every entry point with `this` bound to this object, so state lives here.
    this.context = context;
    // Timers still waiting to emit; cleanup clears them so nothing fires on a context being retired.
    this.pending = new Set();
    console.log("greeter initialized as", context.pluginName);
  },

  async execute(input) {
    // A call without input arrives as null (arguments travel as JSON), so read `name` defensively.
    const name = input?.name || "World";
    const message = this.greet(name);
    console.log("greeter:", message);

    // Emit after a short delay, as the seed plugin does: the caller gets its answer first and
    // listeners hear about the greeting a moment later.
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      this.context.eventBus.emit("greeter:greeted", { name, message });
    }, 10);
    this.pending.add(timer);

    return { message };
  },

  // Exported to dependents: `handle.greet("calculator")` resolves to the greeting string.
  greet(name) {
    return `Hello, ${name || "World"}!`;
  },

  async cleanup() {
    for (const timer of this.pending) clearTimeout(timer);
    this.pending.clear();
    console.log("greeter cleaned up");
  },
};
