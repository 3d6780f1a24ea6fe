// The load path of the NestJS plugin system Warden grows out of, on Node 20, for the load rows
// of `just bench`: dynamic `import()` of N small plugin files, each then initialized with a
// context holding an EventEmitter, in one shared heap. The files are the ones the Rust bench
// loads (the same template, half of them with a `cleanup()`). Prints one JSON line.
//
//   node tests/benches/load/node_load.mjs [count]

import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const count = Number(process.argv[2] ?? 1000);
const directory = mkdtempSync(join(tmpdir(), "warden-node-load-"));
// The plugins are ES modules with a `.js` name, as Warden's are.
writeFileSync(join(directory, "package.json"), '{ "type": "module" }\n');
const files = [];
for (let index = 0; index < count; index++) {
  const name = `p${String(index).padStart(4, "0")}`;
  const cleanup = index >= count / 2 ? ",\n async cleanup() { this.calls = 0; }" : "";
  const file = join(directory, `${name}.js`);
  writeFileSync(
    file,
    `export default { metadata: { name: "${name}", version: "1.0.0" },\n` +
      ` async initialize(context) { this.context = context; this.calls = 0; },\n` +
      ` async execute(input) { this.calls++; return input; }${cleanup} };\n`,
  );
  files.push(file);
}

const bus = new EventEmitter();
bus.setMaxListeners(0);
const times = [];
const started = process.hrtime.bigint();
for (const file of files) {
  const loadStarted = process.hrtime.bigint();
  const plugin = (await import(pathToFileURL(file).href)).default;
  const name = plugin.metadata.name;
  const context = {
    plugin: name,
    events: {
      emit: (event, data) => bus.emit(event, data, { event, source: name }),
      on: (pattern, listener) => bus.on(pattern, listener),
      off: (pattern, listener) => bus.off(pattern, listener),
    },
    logger: console,
  };
  await plugin.initialize(context);
  times.push(Number(process.hrtime.bigint() - loadStarted) / 1e6);
}
const totalMs = Number(process.hrtime.bigint() - started) / 1e6;
times.sort((a, b) => a - b);
const at = (fraction) => times[Math.min(times.length - 1, Math.floor(times.length * fraction))];
console.log(JSON.stringify({ count, meanMs: totalMs / count, p50Ms: at(0.5), p99Ms: at(0.99) }));
rmSync(directory, { recursive: true, force: true });
