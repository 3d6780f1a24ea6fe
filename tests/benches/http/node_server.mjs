// The Node 20 side of the public-listener benchmark: the same two handlers as the Warden
// plugin in bench.sh, on Node's own `http` module (and a `pg` Pool of the same size as the
// plugin's share of connections). Run by tests/benches/http/bench.sh.
//
//   node node_server.mjs <port> <postgres url> <pool size>
import http from "node:http";
import pg from "pg";

const [port, databaseUrl, poolSize] = process.argv.slice(2);
const pool = databaseUrl ? new pg.Pool({ connectionString: databaseUrl, max: Number(poolSize || 8) }) : null;

if (pool) {
  await pool.query("CREATE TABLE IF NOT EXISTS node_bench_points (id int PRIMARY KEY, value text NOT NULL)");
  await pool.query("INSERT INTO node_bench_points SELECT n, 'value ' || n FROM generate_series(1, 1000) n ON CONFLICT DO NOTHING");
}

function send(response, status, value) {
  const body = JSON.stringify(value);
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  response.end(body);
}

const server = http.createServer(async (request, response) => {
  const path = request.url.split("?")[0];
  if (path === "/api/bench/hello") return send(response, 200, { hello: "world" });
  const point = /^\/api\/bench\/points\/([^/]+)$/.exec(path);
  if (point && pool) {
    try {
      const { rows } = await pool.query("SELECT id, value FROM node_bench_points WHERE id = $1", [Number(point[1])]);
      return rows.length ? send(response, 200, rows[0]) : send(response, 404, { error: "no such point" });
    } catch (error) {
      return send(response, 500, { error: error.message });
    }
  }
  send(response, 404, { error: "not found" });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(port), "127.0.0.1", () => console.log(`node listening on ${port}`));
