// The MCP gateway with the official TypeScript SDK (`@modelcontextprotocol/sdk`) as the client,
// in front of `@modelcontextprotocol/server-everything` twice: over Streamable HTTP and over the
// legacy HTTP+SSE transport.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const ROOT = path.resolve(import.meta.dirname, "..", "..");
const MASTER_KEY = "sk-node-master-key-0123456789";
const BIN = process.env.FERRYMAN_BIN
  ? path.resolve(process.env.FERRYMAN_BIN)
  : path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target"), "debug", "ferryman");
const EVERYTHING = path.join(ROOT, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js");

const children = [];
let dir;
let url;
// The two server-everything processes, to kill and restart: { streamableHttp, sse } → { port, child }.
const upstreams = {};

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** Starts a process and waits for a line of its stderr to match `ready`. */
function start(cmd, args, options, ready, started = () => {}) {
  const child = spawn(cmd, args, { ...options, stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  started(child);
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start:\n${log}`)), 60_000);
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.on("exit", (code) => reject(new Error(`${cmd} exited (${code}):\n${log}`)));
  });
}

/** server-everything over `transport` on `port`, once it listens. */
function startEverything(transport, port) {
  const ready = transport === "sse" ? /running on port/ : /listening/;
  return start("node", [EVERYTHING, transport], { env: { ...process.env, PORT: String(port) } }, ready, (child) => {
    upstreams[transport] = { port, child };
  });
}

/** Kills server-everything over `transport` and waits until it is gone. */
async function killEverything(transport) {
  const { child } = upstreams[transport];
  const gone = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await gone;
}

before(async () => {
  const httpPort = await freePort();
  const ssePort = await freePort();
  await startEverything("streamableHttp", httpPort);
  await startEverything("sse", ssePort);
  dir = mkdtempSync(path.join(tmpdir(), "ferryman-node-mcp-"));
  writeFileSync(
    path.join(dir, "config.yaml"),
    `general_settings:
  master_key: ${MASTER_KEY}
  database_url: "sqlite://${dir}/ferryman.db"
mcp_servers:
  everything:
    url: http://127.0.0.1:${httpPort}/mcp
    allowed_tools: [echo, get-sum, get-env]
  legacy:
    url: http://127.0.0.1:${ssePort}/sse
    transport: sse
    disallowed_tools: [get-env]
`,
  );
  const env = { ...process.env, NO_COLOR: "1" };
  delete env.DATABASE_URL;
  delete env.FERRYMAN_MASTER_KEY;
  const m = await start(BIN, ["serve", "--host", "127.0.0.1", "--port", "0", "--config", "config.yaml"], { cwd: dir, env }, /listening on (\S+)/);
  url = `http://${m[1]}`;
});

after(() => {
  for (const child of children) child.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function createKey(body) {
  const r = await fetch(`${url}/key/generate`, {
    method: "POST",
    headers: { Authorization: `Bearer ${MASTER_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200);
  return (await r.json()).key;
}

async function connect(endpoint, key) {
  const client = new Client({ name: "ferryman-node-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  return client;
}

async function allTools(client) {
  const names = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    names.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  return names;
}

test("server-everything over Streamable HTTP and SSE, through one endpoint", async () => {
  const key = await createKey({ key_alias: "node-mcp" });
  const client = await connect(`${url}/mcp`, key);
  try {
    const names = await allTools(client);
    assert.deepEqual(names.filter((n) => n.startsWith("everything-")).sort(), ["everything-echo", "everything-get-env", "everything-get-sum"]);
    assert.ok(names.includes("legacy-echo") && names.includes("legacy-get-sum"), names.join(", "));
    assert.ok(!names.includes("legacy-get-env"), "disallowed_tools hides a tool");

    const echoed = await client.callTool({ name: "everything-echo", arguments: { message: "via ferryman" } });
    assert.match(echoed.content[0].text, /via ferryman/);
    const sum = await client.callTool({ name: "legacy-get-sum", arguments: { a: 2, b: 3 } });
    assert.match(sum.content[0].text, /5/);
    // The client's key is never forwarded: nothing upstream has seen it.
    const env = await client.callTool({ name: "everything-get-env", arguments: {} });
    assert.ok(!env.content[0].text.includes(key));
  } finally {
    await client.close();
  }
});

test("one server by path, and a key that may use none", async () => {
  const key = await createKey({ object_permission: { mcp_servers: ["legacy"] } });
  const client = await connect(`${url}/mcp/legacy`, key);
  try {
    const names = await allTools(client);
    assert.ok(names.length > 0 && names.every((n) => n.startsWith("legacy-")), names.join(", "));
  } finally {
    await client.close();
  }
  const refused = await fetch(`${url}/mcp/everything`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", Accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
  });
  assert.equal(refused.status, 403);
  const none = await createKey({ object_permission: { mcp_servers: [] } });
  const c2 = await connect(`${url}/mcp`, none);
  try {
    await assert.rejects(c2.listTools(), /this key may use no MCP server/);
  } finally {
    await c2.close();
  }
});

test("upstreams killed and restarted: calls fail fast while they are down, and reconnect after", async () => {
  const key = await createKey({ key_alias: "node-mcp-restarts" });
  const client = await connect(`${url}/mcp`, key);
  const echo = (name, message) => client.callTool({ name, arguments: { message } });
  try {
    for (const [transport, tool] of [["streamableHttp", "everything-echo"], ["sse", "legacy-echo"]]) {
      assert.match((await echo(tool, "first")).content[0].text, /first/);

      // Restarted between two calls: Ferryman's session with it is stale (the new process
      // answers 404 to it, or the stream it held ended), so the call reconnects and succeeds.
      await killEverything(transport);
      await startEverything(transport, upstreams[transport].port);
      const again = await echo(tool, "after a restart");
      assert.ok(!again.isError, JSON.stringify(again));
      assert.match(again.content[0].text, /after a restart/);

      // Down: the call comes back at once as a tool error naming the server; never a hang.
      await killEverything(transport);
      const started = Date.now();
      const down = await echo(tool, "anyone?");
      assert.equal(down.isError, true);
      assert.match(down.content[0].text, /is unreachable|did not answer/);
      assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);

      await startEverything(transport, upstreams[transport].port);
      const back = await echo(tool, "back");
      assert.ok(!back.isError, JSON.stringify(back));
      assert.match(back.content[0].text, /back/);
    }
  } finally {
    await client.close();
  }
});
