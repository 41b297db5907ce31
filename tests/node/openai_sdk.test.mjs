// The official `openai` npm package against the real `ferryman` binary: whole and streamed
// completions, the model list, usage and cost headers, and the SDK's typed errors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import OpenAI from "openai";

const ROOT = path.resolve(import.meta.dirname, "..", "..");
const MASTER_KEY = "sk-node-master-key-0123456789";
const BIN = process.env.FERRYMAN_BIN
  ? path.resolve(process.env.FERRYMAN_BIN)
  : path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target"), "debug", "ferryman");

let proc;
let dir;
let url;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "ferryman-node-"));
  writeFileSync(
    path.join(dir, "config.yaml"),
    `model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
general_settings:
  master_key: ${MASTER_KEY}
  database_url: "sqlite://${dir}/ferryman.db"
`,
  );
  const env = { ...process.env, NO_COLOR: "1" };
  delete env.DATABASE_URL;
  delete env.FERRYMAN_MASTER_KEY;
  proc = spawn(BIN, ["serve", "--host", "127.0.0.1", "--port", "0", "--config", "config.yaml"], {
    cwd: dir,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  url = await new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`ferryman did not start:\n${log}`)), 60_000);
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    proc.on("exit", (code) => reject(new Error(`ferryman exited (${code}):\n${log}`)));
  });
});

after(() => {
  proc?.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

async function createKey(body) {
  const r = await fetch(`${url}/key/generate`, {
    method: "POST",
    headers: { Authorization: `Bearer ${MASTER_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200);
  return r.json();
}

test("completions whole and streamed, and the model list", async () => {
  const key = await createKey({ key_alias: "node-app", models: ["demo"] });
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key.key, maxRetries: 0 });

  const { data: completion, response } = await client.chat.completions
    .create({ model: "demo", messages: [{ role: "user", content: "hello from node" }], user: "node-customer" })
    .withResponse();
  assert.equal(completion.object, "chat.completion");
  assert.match(completion.choices[0].message.content, /hello from node/);
  const usage = completion.usage;
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  const nanos = Math.floor((usage.prompt_tokens * 150_000_000 + usage.completion_tokens * 600_000_000 + 500_000) / 1_000_000);
  assert.equal(Number(response.headers.get("x-ferryman-response-cost")), nanos / 1e9);

  const stream = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: "stream it from node" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let streamedUsage;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) streamedUsage = chunk.usage;
  }
  assert.match(text, /stream it from node/);
  assert.ok(streamedUsage.completion_tokens > 0);

  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ["demo"],
  );
});

test("errors arrive as the SDK's types", async () => {
  const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-not-a-key", maxRetries: 0 });
  await assert.rejects(
    bad.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
    OpenAI.AuthenticationError,
  );
  const broke = await createKey({ models: ["demo"], max_budget: 0 });
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: broke.key, maxRetries: 0 });
  await assert.rejects(
    client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof OpenAI.BadRequestError && /Budget/.test(e.message),
  );
  const limited = await createKey({ models: ["demo"], rpm_limit: 1 });
  const one = new OpenAI({ baseURL: `${url}/v1`, apiKey: limited.key, maxRetries: 0 });
  await one.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "hi" }] });
  await assert.rejects(
    one.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "hi" }] }),
    OpenAI.RateLimitError,
  );
});
