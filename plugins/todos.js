// A small JSON API over the plugin's own table, served on the public listener under
// /api/todos (see the README's "Writing a plugin"):
//
//   GET    /api/todos/todos        list, newest first (?done=true|false filters)
//   GET    /api/todos/todos/:id    one todo, or 404 todo_not_found
//   POST   /api/todos/todos        {"title": "…"} → 201 with the new todo
//   DELETE /api/todos/todos/:id    204, or 404 todo_not_found
//   POST   /api/todos/todos/done   {"ids": [1, 2]} → marks them all done in one transaction,
//                                  or none of them (404 todo_not_found) if one is missing
//
// Its schema is its `migrations`: Warden applies the pending ones, in order and in one
// transaction, before `initialize`, and records them (GET /plugins/todos/migrations). An
// applied migration is never edited; a change of schema is a new migration at the end.
//
// Migrations need a database: without WARDEN_DATABASE_URL this plugin is refused at load.

// An error the public listener answers with its status and code (never a stack trace).
function httpError(status, code, message) {
  return Object.assign(new Error(message), { status, code });
}

// The database capability, or a 503 when this Warden has none. A module-level helper, not a
// function on the plugin object, so that dependents cannot call it.
function database(plugin) {
  if (!plugin.context.database) throw httpError(503, "database_unavailable", "this Warden has no database configured");
  return plugin.context.database;
}

// The id of `/todos/:id` as a positive integer, or a 400.
function todoId(request) {
  const id = Number(request.params.id);
  if (!Number.isSafeInteger(id) || id <= 0) throw httpError(400, "invalid_id", "the id must be a positive integer");
  return id;
}

export default {
  metadata: {
    name: "todos",
    version: "1.0.0",
    description: "A JSON API of todos over its own PostgreSQL table",
    allowedTables: ["todos"],
  },

  routes: {
    "GET /todos": "listTodos",
    "GET /todos/:id": "getTodo",
    "POST /todos": "createTodo",
    "DELETE /todos/:id": "deleteTodo",
    "POST /todos/done": "completeTodos",
  },

  migrations: [
    // IF NOT EXISTS: the table of the version before migrations is taken over as it is.
    { id: "001_todos", sql: "CREATE TABLE IF NOT EXISTS todos (id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now())" },
    { id: "002_todos_by_done", sql: "CREATE INDEX todos_by_done ON todos (done, id)" },
  ],

  initialize(context) {
    this.context = context;
  },

  async listTodos(request) {
    const done = request.query.done;
    const todos = done === "true" || done === "false"
      ? await database(this).executeQuery("SELECT id, title, done, created_at FROM todos WHERE done = $1 ORDER BY id DESC LIMIT 100", [done === "true"])
      : await database(this).executeQuery("SELECT id, title, done, created_at FROM todos ORDER BY id DESC LIMIT 100");
    return { json: { todos } };
  },

  async getTodo(request) {
    const [todo] = await database(this).executeQuery("SELECT id, title, done, created_at FROM todos WHERE id = $1", [todoId(request)]);
    if (!todo) throw httpError(404, "todo_not_found", "no todo has this id");
    return { json: todo };
  },

  async createTodo(request) {
    const title = request.json && request.json.title;
    if (typeof title !== "string" || title.trim() === "") throw httpError(400, "title_required", "send {\"title\": \"…\"} with a non-empty title");
    const [todo] = await database(this).executeQuery(
      "INSERT INTO todos (title) VALUES ($1) RETURNING id, title, done, created_at",
      [title.trim()],
    );
    return { status: 201, json: todo };
  },

  async completeTodos(request) {
    const ids = request.json && request.json.ids;
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > 100 || !ids.every((id) => Number.isSafeInteger(id) && id > 0)) {
      throw httpError(400, "invalid_ids", "send {\"ids\": [1, 2, …]} with 1 to 100 positive integer ids");
    }
    // All or nothing: a missing id throws inside the callback, which rolls back the updates
    // made before it.
    const todos = await database(this).transaction(async (tx) => {
      const updated = [];
      for (const id of ids) {
        const [todo] = await tx.executeQuery("UPDATE todos SET done = true WHERE id = $1 RETURNING id, title, done, created_at", [id]);
        if (!todo) throw httpError(404, "todo_not_found", "no todo has id " + id + "; none was marked done");
        updated.push(todo);
      }
      return updated;
    });
    return { json: { todos } };
  },

  async deleteTodo(request) {
    const deleted = await database(this).executeCommand("DELETE FROM todos WHERE id = $1", [todoId(request)]);
    if (deleted === 0) throw httpError(404, "todo_not_found", "no todo has this id");
    return null;
  },
};
