#!/usr/bin/env node
// A local x402 facilitator built from the reference packages @x402/core and
// @x402/evm (versions pinned in package.json), for toolgate's end-to-end
// tests. It serves the reference HTTP API:
//
//   GET  /supported                    kinds, extensions and signers
//   POST /verify  {x402Version, paymentPayload, paymentRequirements}
//   POST /settle  {x402Version, paymentPayload, paymentRequirements}
//   GET  /stats                        {"verify":N,"settle":N,"connections":N}
//                                      (connections: TCP connections accepted; test-only)
//   GET  /timings                      the /verify and /settle answered since
//                                      the last /timings, each {op, ms, rpc:
//                                      [[method, ms], ...]} (its node calls),
//                                      at: [received, answered]} (wall clock,
//                                      Unix ms), then forgets them (test-only)
//   GET  /healthz
//
// The exact EVM scheme is registered for v2 ("eip155:84532") and, through
// registerExactEvmScheme, for every v1 EVM network name ("base-sepolia", ...);
// the upto scheme (Permit2) for v2 "eip155:84532", with the relayer as its
// facilitatorAddress (/supported extra).
// Chain reads and the settlement transactions go to the local RPC, signed by
// the relayer key; viem gets Base Sepolia's chain definition with that RPC.
//
// Configuration (flags win over environment):
//   --rpc URL           FACILITATOR_RPC_URL        (required) local anvil RPC
//   --port N            FACILITATOR_PORT           (default 0 = any free port)
//   --host H            FACILITATOR_HOST           (default 127.0.0.1)
//   FACILITATOR_PRIVATE_KEY                        (required) relayer key, 0x-hex
//   --invalid-status N  FACILITATOR_INVALID_STATUS (default 200) HTTP status of
//                       an isValid:false verify answer; some facilitators use 400
//   --settle-delay-ms N FACILITATOR_SETTLE_DELAY_MS (default 0) sleep before
//                       each settle, to test gateway timeouts
//   --no-multicall                                 do not place Multicall3
//
// A fresh anvil has no Multicall3, which the reference facilitator uses only
// to explain a failed simulation (nonce used, balance too low, ...). Unless
// --no-multicall is given, the server places contracts/TestMulticall3.json at
// the canonical address with anvil_setCode when no code is there.
//
// When listening it prints one JSON line to stdout:
//   {"event":"ready","url":"http://127.0.0.1:PORT","relayer":"0x...","chainId":84532}
// Request errors go to stderr. It exits on SIGTERM/SIGINT.
import http from "node:http";
import { AsyncLocalStorage } from "node:async_hooks";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  createPublicClient,
  createWalletClient,
  http as viemHttp,
  TransactionReceiptNotFoundError,
  WaitForTransactionReceiptTimeoutError,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { x402Facilitator } from "@x402/core/facilitator";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { UptoEvmScheme } from "@x402/evm/upto/facilitator";

const here = dirname(fileURLToPath(import.meta.url));
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";
const NETWORK = "eip155:84532";

function fail(msg) {
  process.stderr.write(`facilitator: ${msg}\n`);
  process.exit(2);
}

const { values: flags } = parseArgs({
  options: {
    rpc: { type: "string" },
    port: { type: "string" },
    host: { type: "string" },
    "invalid-status": { type: "string" },
    "settle-delay-ms": { type: "string" },
    "no-multicall": { type: "boolean", default: false },
  },
});
const rpcUrl = flags.rpc ?? process.env.FACILITATOR_RPC_URL;
const port = Number(flags.port ?? process.env.FACILITATOR_PORT ?? 0);
const host = flags.host ?? process.env.FACILITATOR_HOST ?? "127.0.0.1";
const invalidStatus = Number(flags["invalid-status"] ?? process.env.FACILITATOR_INVALID_STATUS ?? 200);
const settleDelayMs = Number(flags["settle-delay-ms"] ?? process.env.FACILITATOR_SETTLE_DELAY_MS ?? 0);
const key = process.env.FACILITATOR_PRIVATE_KEY;
if (!rpcUrl) fail("set FACILITATOR_RPC_URL or --rpc");
if (!key || !/^0x[0-9a-fA-F]{64}$/.test(key)) fail("set FACILITATOR_PRIVATE_KEY to a 0x-prefixed 32-byte hex key");
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${port}`);

// Base Sepolia's definitions, but every request goes to the local RPC. A short
// polling interval keeps receipt waits on an automining anvil near zero.
const chain = { ...baseSepolia, rpcUrls: { default: { http: [rpcUrl] } } };
// Each node call is timed and charged to the /verify or /settle it serves
// (GET /timings).
const current = new AsyncLocalStorage();
let timings = [];
async function timedFetch(url, init) {
  const t0 = performance.now();
  const res = await fetch(url, init);
  const op = current.getStore();
  if (op) {
    let method = "?";
    try {
      const b = JSON.parse(init.body);
      method = Array.isArray(b) ? b.map((x) => x.method).join("+") : b.method;
    } catch {}
    op.rpc.push([method, Math.round((performance.now() - t0) * 1000) / 1000]);
  }
  return res;
}
const transport = viemHttp(rpcUrl, { retryCount: 0, timeout: 20_000, fetchFn: timedFetch });
const account = privateKeyToAccount(key);
const publicClient = createPublicClient({ chain, transport, pollingInterval: 50 });
const walletClient = createWalletClient({ account, chain, transport, pollingInterval: 50 });

const remoteChainId = await publicClient.getChainId().catch((e) => fail(`RPC ${rpcUrl}: ${e.message}`));
if (remoteChainId !== baseSepolia.id) fail(`RPC chain id is ${remoteChainId}, want ${baseSepolia.id}`);

if (!flags["no-multicall"]) {
  const code = await publicClient.getCode({ address: MULTICALL3 });
  if (!code || code === "0x") {
    const artifact = JSON.parse(readFileSync(join(here, "contracts", "TestMulticall3.json"), "utf8"));
    await publicClient
      .request({ method: "anvil_setCode", params: [MULTICALL3, artifact.deployedBytecode] })
      .catch((e) => fail(`place Multicall3 with anvil_setCode: ${e.message}`));
  }
}

// waitReceipt asks for the receipt until it is there (every 2 ms, at most
// 30 s). viem's waitForTransactionReceipt looks once, then waits for a
// block after the one it reads; on an automining anvil the receipt can
// trail the block number, and no later block comes while the next payment
// waits for this one, so that wait could last its whole timeout on a
// loaded machine. Both servers of the latency comparison settle through
// this same wait.
async function waitReceipt({ hash }) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await publicClient.getTransactionReceipt({ hash });
    } catch (e) {
      if (!(e instanceof TransactionReceiptNotFoundError)) throw e;
    }
    if (Date.now() > deadline) throw new WaitForTransactionReceiptTimeoutError({ hash });
    await new Promise((r) => setTimeout(r, 2));
  }
}

// The FacilitatorEvmSigner contract of @x402/evm, spelled out over viem.
const signer = {
  address: account.address,
  getAddresses: () => [account.address],
  readContract: (args) => publicClient.readContract(args),
  verifyTypedData: (args) => publicClient.verifyTypedData(args),
  writeContract: (args) => walletClient.writeContract({ ...args, chain }),
  sendTransaction: (args) => walletClient.sendTransaction({ ...args, chain }),
  waitForTransactionReceipt: waitReceipt,
  getCode: (args) => publicClient.getCode(args),
};

const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: NETWORK });
// The upto scheme (Permit2; needs Permit2 and the upto proxy on the chain,
// chain.DeployPermit2). Its simulation of the proxy's settle must run as
// the relayer, whom the proxy checks against the witness's facilitator:
// a viem wallet client (the usual facilitator signer) reads as its own
// account, so this signer's reads do too. The exact scheme keeps the plain
// reads above.
const uptoSigner = { ...signer, readContract: (args) => publicClient.readContract({ account, ...args }) };
facilitator.register(NETWORK, new UptoEvmScheme(uptoSigner));

const stats = { verify: 0, settle: 0, connections: 0 };

function send(res, status, body) {
  const text = JSON.stringify(body, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readJSON(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 1 << 20) throw new Error("body too large");
    chunks.push(c);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function checkBody(body) {
  if (typeof body !== "object" || body === null) return "body must be a JSON object";
  if (typeof body.paymentPayload !== "object" || body.paymentPayload === null) return "paymentPayload is required";
  if (typeof body.paymentRequirements !== "object" || body.paymentRequirements === null)
    return "paymentRequirements is required";
  return "";
}

const server = http.createServer(async (req, res) => {
  const received = performance.timeOrigin + performance.now();
  const path = new URL(req.url, "http://x").pathname;
  try {
    if (req.method === "GET" && path === "/supported") return send(res, 200, facilitator.getSupported());
    if (req.method === "GET" && path === "/stats") return send(res, 200, stats);
    if (req.method === "GET" && path === "/timings") {
      const t = timings;
      timings = [];
      return send(res, 200, t);
    }
    if (req.method === "GET" && path === "/healthz") return send(res, 200, { ok: true });
    if (req.method === "POST" && (path === "/verify" || path === "/settle")) {
      let body;
      try {
        body = await readJSON(req);
      } catch (e) {
        return send(res, 400, { error: `invalid JSON: ${e.message}` });
      }
      const problem = checkBody(body);
      if (problem) return send(res, 400, { error: problem });
      const op = { op: path.slice(1), ms: 0, rpc: [], at: [] };
      const t0 = performance.now();
      const done = (status, result) => {
        const t1 = performance.now();
        op.ms = Math.round((t1 - t0) * 1000) / 1000;
        op.at = [Math.round(received * 1000) / 1000, Math.round((performance.timeOrigin + t1) * 1000) / 1000];
        if (timings.length < 100_000) timings.push(op);
        return send(res, status, result);
      };
      if (path === "/verify") {
        stats.verify++;
        const result = await current.run(op, () => facilitator.verify(body.paymentPayload, body.paymentRequirements));
        return done(result.isValid ? 200 : invalidStatus, result);
      }
      stats.settle++;
      if (settleDelayMs > 0) await new Promise((r) => setTimeout(r, settleDelayMs));
      const result = await current.run(op, () => facilitator.settle(body.paymentPayload, body.paymentRequirements));
      return done(200, result);
    }
    return send(res, 404, { error: "not found" });
  } catch (e) {
    process.stderr.write(`facilitator: ${req.method} ${path}: ${e?.stack ?? e}\n`);
    return send(res, 500, { error: e instanceof Error ? e.message : String(e) });
  }
});
server.keepAliveTimeout = 30_000;
server.on("connection", () => stats.connections++);

server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(
    JSON.stringify({
      event: "ready",
      url: `http://${host}:${addr.port}`,
      relayer: account.address,
      chainId: remoteChainId,
      network: NETWORK,
    }) + "\n",
  );
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
