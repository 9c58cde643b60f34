#!/usr/bin/env node
// Drives an MCP server's tasks with the official tasks client (@modelcontextprotocol/ext-tasks) on the official
// TypeScript MCP client, in one protocol era, over stdio or Streamable HTTP; one JSON line per step on stdout.
//
//   node driver.mjs --era 2025-11-25|2026-07-28 (--url URL [--token T] | --cmd EXE --arg A ...) --do ACTION ...
//
// Actions:
//   full     --args JSON --cancel-args JSON   create a task and settle it, read it again, list, cancel another,
//                                              ask for an unknown id (each step: ok or its error)
//   create   --args JSON                      create a task and print its id (the task goes on)
//   resume   --task ID                        follow a task to its end and print the outcome
//   get      --task ID                        one tasks/get: the task, or the JSON-RPC error
//   cancel   --task ID                        one tasks/cancel: ok, or the JSON-RPC error
//   list                                      every task tasks/list gives, page after page (2025-11-25)
//
// 2026-07-28 needs the host to carry tasks/* and task results itself (ext-tasks' `rawDispatch`: the SDK client's
// 2026 codec refuses them); this sends them on the session's own transport with string ids.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { createTaskSessionFromClient, JsonRpcResponseError } from "@modelcontextprotocol/ext-tasks/client";

const opts = { arg: [] };
for (let i = 2; i < process.argv.length; i++) {
  const key = process.argv[i].replace(/^--/, "");
  const value = process.argv[++i];
  if (key === "arg") opts.arg.push(value);
  else opts[key] = value;
}
const ERA = opts.era;
const TOOL = opts.tool ?? "generate_video";
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const error = (e) => ({ name: e?.name, message: e?.message, code: e?.code, data: e?.data });
const task = (t) => t && { taskId: t.taskId, status: t.status, statusMessage: t.statusMessage, raw: t.raw };
const outcome = (o) => ({
  status: o.status,
  ...(o.status === "completed" ? { result: o.result } : {}),
  ...(o.status === "failed" ? { error: error(o.error) } : {}),
});
setTimeout(() => { out({ step: "watchdog" }); process.exit(3); }, Number(opts.timeout ?? 120000));

let transport;
if (opts.url) {
  const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
} else {
  const env = Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== undefined));
  transport = new StdioClientTransport({ command: opts.cmd, args: opts.arg, env, stderr: "inherit" });
}
const clientInfo = { name: "ext-tasks-driver", version: "1" };
const client = new Client(clientInfo, {
  capabilities: {},
  ...(ERA === "2026-07-28" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {}),
});
await client.connect(transport);
out({ step: "connected", era: client.getProtocolEra(), capabilities: client.getServerCapabilities() });

const pending = new Map();
let sent = 0;
const delivered = transport.onmessage;
transport.onmessage = (message, extra) => {
  if (typeof message?.id === "string" && pending.has(message.id) && ("result" in message || "error" in message)) {
    const resolve = pending.get(message.id);
    pending.delete(message.id);
    resolve("error" in message ? { kind: "error", error: message.error } : { kind: "result", result: message.result });
    return;
  }
  return delivered?.call(transport, message, extra);
};
function rawDispatch(request) {
  const id = `ext-tasks-raw-${++sent}`;
  return new Promise((resolve, reject) => {
    pending.set(id, resolve);
    transport.send({ jsonrpc: "2.0", id, ...request }).catch(reject);
  });
}
const session = createTaskSessionFromClient(client, {
  endpointId: "kling3-tests",
  onError: (e) => out({ step: "session_error", error: error(e) }),
  ...(ERA === "2026-07-28"
    ? { rawDispatch, v2RequestFraming: { protocolVersion: ERA, clientInfo, clientCapabilities: {} } }
    : {}),
});

let failures = 0;
async function step(name, fn) {
  try {
    const found = await fn();
    out({ step: name, ok: true, ...found });
    return found;
  } catch (e) {
    failures++;
    out({ step: name, ok: false, error: error(e) });
    return undefined;
  }
}
async function listed() {
  if (session.capabilities.inventory !== "server-list") return { skipped: session.capabilities.inventory };
  const tasks = [];
  let cursor;
  do {
    const page = await session.listTasks(cursor);
    tasks.push(...page.tasks.map(task));
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return { tasks };
}
async function start(args) {
  const execution = await session.callTool(TOOL, JSON.parse(args), { task: { preference: "require" } });
  return execution;
}

if (opts.do === "full") {
  const first = await step("create_and_settle", async () => {
    const execution = await start(opts.args);
    const updates = [];
    const settled = await execution.settle({ onEvent: (e) => e.type === "task" && updates.push(task(e.task)) });
    return { taskId: execution.handle.taskId, updates, outcome: outcome(settled.outcome) };
  });
  if (first) {
    await step("snapshot", async () => ({ task: task(await session.task(first.taskId).snapshot()) }));
    await step("result", async () => ({ outcome: outcome(await session.task(first.taskId).result()) }));
  }
  await step("list", listed);
  await step("cancel", async () => {
    const execution = await start(opts["cancel-args"]);
    const taskId = execution.handle.taskId;
    await session.cancelTask(taskId);
    const ended = await execution.result();
    return { taskId, outcome: outcome(ended), after: task(await session.task(taskId).snapshot()) };
  });
  await step("unknown", async () => {
    try {
      await session.task("no-such-task").snapshot();
    } catch (e) {
      if (e instanceof JsonRpcResponseError) return { code: e.code, message: e.message };
      throw e;
    }
    throw new Error("an unknown task id was answered");
  });
} else if (opts.do === "create") {
  await step("create", async () => ({ taskId: (await start(opts.args)).handle.taskId }));
} else if (opts.do === "resume") {
  await step("resume", async () => ({ outcome: outcome(await session.task(opts.task).result()) }));
} else if (opts.do === "get") {
  await step("get", async () => ({ task: task(await session.task(opts.task).snapshot()) }));
} else if (opts.do === "list") {
  await step("list", listed);
} else if (opts.do === "cancel") {
  await step("cancel", async () => (await session.cancelTask(opts.task), {}));
}
await session.close();
await client.close();
out({ step: "done", failures });
process.exit(failures === 0 ? 0 : 1);
