// A small JSON API over the plugin's own table, served on the public listener under
// /api/todos (see the README's "Writing a plugin"):
//
//   GET    /api/todos/todos        list, newest first (?done=true|false filters)
//   GET    /api/todos/todos/:id    one todo, or 404 todo_not_found
//   POST   /api/todos/todos        {"title": "…"} → 201 with the new todo
//   DELETE /api/todos/todos/:id    204, or 404 todo_not_found
//
// Without a configured database every route answers 503 database_unavailable.

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
  },

  async initialize(context) {
    this.context = context;
    if (context.database) {
      await context.database.executeCommand(
        "CREATE TABLE IF NOT EXISTS todos (id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now())",
      );
    }
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

  async deleteTodo(request) {
    const deleted = await database(this).executeCommand("DELETE FROM todos WHERE id = $1", [todoId(request)]);
    if (deleted === 0) throw httpError(404, "todo_not_found", "no todo has this id");
    return null;
  },
};
