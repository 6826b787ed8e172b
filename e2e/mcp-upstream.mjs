#!/usr/bin/env node
// An upstream MCP server for toolgate's "mcp_servers" import, built with the
// official TypeScript SDK (@modelcontextprotocol/sdk 1.32.2, pinned in
// package.json): McpServer + StreamableHTTPServerTransport over node:http,
// stateful (one transport and one McpServer per session, ids from
// sessionIdGenerator), answering POSTs with an event stream
// (enableJsonResponse false), so toolgate's SSE parsing is exercised.
//
//   POST|GET|DELETE /mcp   the MCP endpoint. A request naming a session this
//                          process does not know (it was restarted, or the
//                          session was deleted) gets 404 with a JSON-RPC
//                          error, as the spec asks, so the client initializes
//                          again; a non-initialize request with no session
//                          gets 400.
//   GET /stats             {"calls":{"read":N,..},"initialize":N,"sessions":N,
//                           "unknownSession":N,"noSession":N,"pid":N}
//                          (test-only): tool calls run, sessions opened and
//                          open, requests refused for an unknown session (404)
//                          and for no session (400)
//
// Tools (zod schemas, as the SDK expects):
//   read   {path}  → structuredContent {path, bytes} (bytes: 42)
//   delete {path}  → structuredContent {deleted: path}
//   fail   {path?} → isError true, one text block "disk on fire: PATH"
//
// Usage: node mcp-upstream.mjs [--port N] [--host H]
//   --port N  default 0 (any free port); give the old port to restart in place
//   --host H  default 127.0.0.1
//
// When listening it prints one JSON line to stdout:
//   {"event":"ready","port":N,"url":"http://127.0.0.1:N/mcp","pid":N}
// It exits on SIGTERM/SIGINT; errors go to stderr.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

function fail(msg) {
  process.stderr.write(`mcp-upstream: ${msg}\n`);
  process.exit(2);
}

let flags;
try {
  ({ values: flags } = parseArgs({
    options: { port: { type: "string", default: "0" }, host: { type: "string", default: "127.0.0.1" } },
  }));
} catch (e) {
  fail(e.message);
}
const port = Number(flags.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port ${flags.port}`);

const stats = { calls: { read: 0, delete: 0, fail: 0 }, initialize: 0, sessions: 0, unknownSession: 0, noSession: 0, pid: process.pid };

// newServer is one session's McpServer with the three tools.
function newServer() {
  const s = new McpServer({ name: "files", version: "1.0.0" });
  const path = { path: z.string().describe("A file path") };
  s.registerTool(
    "read",
    { description: "Read a file", inputSchema: path, outputSchema: { path: z.string(), bytes: z.number() } },
    async ({ path }) => {
      stats.calls.read++;
      const out = { path, bytes: 42 };
      return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
    },
  );
  s.registerTool(
    "delete",
    { description: "Delete a file", inputSchema: path, outputSchema: { deleted: z.string() } },
    async ({ path }) => {
      stats.calls.delete++;
      const out = { deleted: path };
      return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
    },
  );
  s.registerTool(
    "fail",
    { description: "Always fails", inputSchema: { path: z.string().optional() } },
    async ({ path }) => {
      stats.calls.fail++;
      return { isError: true, content: [{ type: "text", text: `disk on fire: ${path ?? ""}` }] };
    },
  );
  return s;
}

const transports = new Map(); // session id → StreamableHTTPServerTransport

function rpcError(res, status, code, message) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));
}

async function readJSON(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function handleMCP(req, res) {
  const sid = req.headers["mcp-session-id"];
  if (sid !== undefined) {
    const t = transports.get(sid);
    if (!t) {
      stats.unknownSession++;
      return rpcError(res, 404, -32001, "Session not found");
    }
    if (req.method === "POST") return t.handleRequest(req, res, await readJSON(req));
    return t.handleRequest(req, res);
  }
  if (req.method !== "POST") {
    stats.noSession++;
    return rpcError(res, 400, -32000, "Bad Request: no session");
  }
  let body;
  try {
    body = await readJSON(req);
  } catch {
    return rpcError(res, 400, -32700, "Parse error");
  }
  if (!isInitializeRequest(body)) {
    stats.noSession++;
    return rpcError(res, 400, -32000, "Bad Request: no session");
  }
  stats.initialize++;
  const t = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    enableJsonResponse: false,
    onsessioninitialized: (id) => {
      transports.set(id, t);
      stats.sessions = transports.size;
    },
  });
  t.onclose = () => {
    if (t.sessionId) transports.delete(t.sessionId);
    stats.sessions = transports.size;
  };
  await newServer().connect(t);
  await t.handleRequest(req, res, body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  let p;
  if (url.pathname === "/mcp") {
    p = handleMCP(req, res);
  } else if (url.pathname === "/stats" && req.method === "GET") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(stats));
    return;
  } else {
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end('{"error":"not found"}');
    return;
  }
  p.catch((e) => {
    process.stderr.write(`mcp-upstream: ${req.method} ${req.url}: ${e?.stack ?? e}\n`);
    if (!res.headersSent) rpcError(res, 500, -32603, "Internal error");
    else res.end();
  });
});

server.on("error", (e) => fail(`listen ${flags.host}:${port}: ${e.code ?? e.message}`));
server.listen(port, flags.host, () => {
  const { port: p } = server.address();
  process.stdout.write(JSON.stringify({ event: "ready", port: p, url: `http://${flags.host}:${p}/mcp`, pid: process.pid }) + "\n");
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    for (const t of transports.values()) t.close().catch(() => {});
    server.close();
    process.exit(0);
  });
}
