#!/usr/bin/env node
// Calls toolgate's tools over MCP with the official TypeScript SDK client
// (@modelcontextprotocol/sdk: Client + StreamableHTTPClientTransport, the
// API key in the transport's requestInit headers): connects, runs the
// --steps (tools/list, tools/call) and prints one JSON line per step.
// Flags, steps and output: see mcp-common.mjs.
import { connect, finish, parseCommandLine, runSteps } from "./mcp-common.mjs";

const opts = parseCommandLine("mcp-client.mjs");
const { client } = await connect(opts);
const failed = await runSteps(client, opts.steps);
await finish(client, failed);
