#!/usr/bin/env node
// Calls toolgate's tools over MCP with the official TypeScript SDK client
// authorized by OAuth: no key, a ClientCredentialsProvider as the
// transport's authProvider. The first request's 401 names toolgate's
// protected-resource metadata (RFC 9728); the SDK reads it, discovers the
// authorization server it names, gets a client_credentials token for
// toolgate's resource (RFC 8707) and retries; a 403 insufficient_scope
// makes it fetch a new token (step-up) and retry once.
// Then it runs the --steps like mcp-client.mjs (see mcp-common.mjs).
//
// Usage: node mcp-oauth.mjs --client-id ID --client-secret S --issuer URL [--steps JSON] URL
// Output: mcp-common.mjs's lines, and {"event":"fetch",...} for every
// HTTP request the client made (method, url, status), so that the test
// sees the discovery happen.
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { die, errorText, finish, out, runSteps } from "./mcp-common.mjs";

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      "client-id": { type: "string" },
      "client-secret": { type: "string" },
      issuer: { type: "string" },
      steps: { type: "string", default: "[]" },
    },
  });
} catch (e) {
  die(`mcp-oauth.mjs: ${e.message}`);
}
const { values, positionals } = parsed;
if (positionals.length !== 1 || !values["client-id"] || !values["client-secret"] || !values.issuer) {
  die("usage: node mcp-oauth.mjs --client-id ID --client-secret S --issuer URL [--steps JSON] URL");
}
let steps;
try {
  steps = JSON.parse(values.steps);
} catch (e) {
  die(`--steps is not valid JSON: ${e.message}`);
}

// Every request the SDK makes (discovery, token, MCP), logged.
const loggingFetch = async (url, init) => {
  const res = await fetch(url, init);
  out({ event: "fetch", method: init?.method ?? "GET", url: String(url), status: res.status, wwwAuthenticate: res.headers.get("www-authenticate") });
  return res;
};

const provider = new ClientCredentialsProvider({
  clientId: values["client-id"],
  clientSecret: values["client-secret"],
  expectedIssuer: values.issuer,
});
const transport = new StreamableHTTPClientTransport(new URL(positionals[0]), { authProvider: provider, fetch: loggingFetch });
const client = new Client({ name: "toolgate-e2e-oauth", version: "1.0.0" }, { capabilities: {} });
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
});
const failed = await runSteps(client, steps);
await finish(client, failed);
