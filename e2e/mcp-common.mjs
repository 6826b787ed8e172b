// Shared connection, step runner and output for mcp-client.mjs and
// mcp-pay.mjs: the official MCP TypeScript SDK client
// (@modelcontextprotocol/sdk 1.32.2, pinned in package.json) over its
// Streamable HTTP transport against toolgate's POST /mcp.
//
// Usage: node mcp-{client,pay}.mjs [--key KEY] [--steps JSON] URL
//   URL        the MCP endpoint, e.g. http://127.0.0.1:8402/mcp
//   --key KEY  sent as X-API-Key on every request (the transport's
//              requestInit headers); none: an anonymous (paying) caller
//   --steps    a JSON array of steps run in order on one connection:
//     {"op":"list"}                              tools/list
//     {"op":"call","name":N,"arguments":{..},"meta":{..},"repeat":K}
//                                                tools/call, K times (default 1)
//   mcp-pay.mjs adds "pay" and "replay" (see there).
//
// Output, one JSON line each on stdout:
//   {"event":"connected","protocolVersion":"2025-11-25","sessionId":"..",
//    "serverInfo":{..},"capabilities":{..},"instructions":".."}
//   {"step":i,"op":"list","tools":[..]}
//   {"step":i,"op":"call","n":j,"ms":..,"result":{..}}  the CallToolResult as
//                                                     the SDK parsed it
//   {"step":i,"op":..,"error":"..","code":N}          the SDK threw (a JSON-RPC
//                                                     error or a transport error)
// The process exits 1 if any step threw (after running the rest), 2 on bad
// usage or a failed connect (with an {"event":"connect_error"} line).
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

export function parseCommandLine(name) {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: { key: { type: "string" }, steps: { type: "string", default: "[]" } },
    });
  } catch (e) {
    die(`${name}: ${e.message}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) die(`usage: node ${name} [--key KEY] [--steps JSON] URL`);
  let steps;
  try {
    steps = JSON.parse(values.steps);
  } catch (e) {
    die(`--steps is not valid JSON: ${e.message}`);
  }
  if (!Array.isArray(steps)) die("--steps must be a JSON array");
  return { url: positionals[0], key: values.key, steps };
}

export function die(msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

export function out(obj) {
  process.stdout.write(JSON.stringify(obj, (_, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n");
}

// connect opens the session (initialize, notifications/initialized) and
// prints the connected line.
export async function connect(opts) {
  const headers = opts.key ? { "X-API-Key": opts.key } : {};
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
  const client = new Client({ name: "toolgate-e2e", version: "1.0.0" }, { capabilities: {} });
  // Errors of the optional GET stream and the like; the requests report
  // their own.
  client.onerror = (e) => process.stderr.write(`mcp client: ${e?.message ?? e}\n`);
  try {
    await client.connect(transport);
  } catch (e) {
    out({ event: "connect_error", error: errorText(e), code: e?.code ?? null });
    process.exit(2);
  }
  out({
    event: "connected",
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    serverInfo: client.getServerVersion() ?? null,
    capabilities: client.getServerCapabilities() ?? null,
    instructions: client.getInstructions() ?? null,
  });
  return { client, transport };
}

export function errorText(e) {
  const cause = e?.cause ? `: ${e.cause.message ?? e.cause}` : "";
  return `${e instanceof Error ? e.message : String(e)}${cause}`;
}

// runSteps runs steps on client; extra maps further op names to
// async (step, i, ctx) => void handlers. It returns whether any step threw.
export async function runSteps(client, steps, extra = {}) {
  let failed = false;
  const ctx = { client };
  for (const [i, step] of steps.entries()) {
    const op = step.op;
    try {
      if (op === "list") {
        const res = await client.listTools();
        out({ step: i, op, tools: res.tools });
      } else if (op === "call") {
        const n = step.repeat ?? 1;
        for (let j = 0; j < n; j++) {
          const t0 = performance.now();
          try {
            const result = await callTool(client, step.name, step.arguments, step.meta);
            ctx.last = { name: step.name, arguments: step.arguments, result };
            out({ step: i, op, n: j, ms: ms(t0), result });
          } catch (e) {
            failed = true;
            out({ step: i, op, n: j, error: errorText(e), code: e?.code ?? null });
          }
        }
      } else if (extra[op]) {
        await extra[op](step, i, ctx);
      } else {
        throw new Error(`unknown step op ${JSON.stringify(op)}`);
      }
    } catch (e) {
      failed = true;
      out({ step: i, op, error: errorText(e), code: e?.code ?? null });
    }
  }
  return failed;
}

export function callTool(client, name, args, meta) {
  const params = { name, arguments: args ?? {} };
  if (meta) params._meta = meta;
  return client.callTool(params);
}

export function ms(t0) {
  return Math.round((performance.now() - t0) * 1000) / 1000;
}

// finish closes the client and exits.
export async function finish(client, failed) {
  await client.close().catch(() => {});
  process.exit(failed ? 1 : 0);
}
