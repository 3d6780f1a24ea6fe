// A port of the seed system's repository example: users and orders tables in PostgreSQL, an
// `events` Kafka topic and a `data` S3 bucket, each reached only through the plugin's context.
// Every capability is optional: without a configured backend the matching actions answer with
// a clear error instead of failing the whole plugin.

function require_(capability, name) {
  if (capability === undefined) {
    const error = new Error(`context.${name} is not configured on this Warden`);
    error.name = "CapabilityUnavailableError";
    throw error;
  }
  return capability;
}

export default {
  metadata: {
    name: "repository",
    version: "1.0.0",
    description: "Users and orders in PostgreSQL, order events in Kafka, exports in S3",
    allowedTables: ["users", "orders"],
    allowedTopics: ["events"],
    allowedBuckets: ["data"],
  },

  async initialize(context) {
    this.context = context;
    if (context.database) {
      await context.database.executeCommand(
        "CREATE TABLE IF NOT EXISTS users (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE NOT NULL)",
      );
      await context.database.executeCommand(
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users (id), total numeric(10, 2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
      );
    }
  },

  async execute(input) {
    const { action } = input ?? {};
    switch (action) {
      case "createUser": {
        const database = require_(this.context.database, "database");
        const [user] = await database.executeQuery(
          "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email",
          [input.name, input.email],
        );
        return user;
      }
      case "createOrder": {
        const database = require_(this.context.database, "database");
        const [order] = await database.executeQuery(
          "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id, user_id, total, created_at",
          [input.userId, input.total],
        );
        if (this.context.kafka) {
          await this.context.kafka.sendMessage("events", [
            { key: String(order.id), value: JSON.stringify({ type: "order-created", order }) },
          ]);
        }
        this.context.eventBus.emit("repository:order-created", order);
        return order;
      }
      case "ordersOf": {
        const database = require_(this.context.database, "database");
        return database.executeQuery(
          "SELECT o.id, o.total, u.name FROM orders o JOIN users u ON u.id = o.user_id WHERE u.id = $1 ORDER BY o.id",
          [input.userId],
        );
      }
      case "exportOrders": {
        const database = require_(this.context.database, "database");
        const s3 = require_(this.context.s3, "s3");
        const rows = await database.executeQuery("SELECT id, user_id, total FROM orders ORDER BY id");
        const key = `exports/orders-${rows.length}.json`;
        await s3.upload(key, JSON.stringify(rows), "application/json", "data");
        return { key, url: await s3.getPresignedUrl(key, 600, "data") };
      }
      default:
        throw new TypeError(`unknown action '${action}'; use createUser, createOrder, ordersOf or exportOrders`);
    }
  },
};
