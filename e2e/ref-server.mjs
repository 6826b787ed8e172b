#!/usr/bin/env node
// The x402 reference resource server (@x402/express 2.27.0 payment
// middleware on express), as a baseline for toolgate's latency comparison.
// One priced route, GET and POST /v1/tools/echo, that echoes the request
// body; verification and settlement go to the given facilitator.
//
// Configuration (flags win over environment):
//   --facilitator URL  REF_FACILITATOR_URL (required) e.g. facilitator.mjs's URL
//   --pay-to ADDR      REF_PAY_TO          (required) merchant address
//   --price P          REF_PRICE           (default "$0.01") a dollar price
//   --port N           REF_PORT            (default 0 = any free port)
//
// When listening it prints one JSON line to stdout:
//   {"event":"ready","url":"http://127.0.0.1:PORT/v1/tools/echo"}
import { parseArgs } from "node:util";
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { ExactEvmScheme } from "@x402/evm/exact/server";

function fail(msg) {
  process.stderr.write(`ref-server: ${msg}\n`);
  process.exit(2);
}

const { values: flags } = parseArgs({
  options: {
    facilitator: { type: "string" },
    "pay-to": { type: "string" },
    price: { type: "string" },
    port: { type: "string" },
  },
});
const facilitatorUrl = flags.facilitator ?? process.env.REF_FACILITATOR_URL;
const payTo = flags["pay-to"] ?? process.env.REF_PAY_TO;
const price = flags.price ?? process.env.REF_PRICE ?? "$0.01";
const port = Number(flags.port ?? process.env.REF_PORT ?? 0);
if (!facilitatorUrl) fail("set REF_FACILITATOR_URL or --facilitator");
if (!payTo || !/^0x[0-9a-fA-F]{40}$/.test(payTo)) fail("set REF_PAY_TO or --pay-to to an address");

const NETWORK = "eip155:84532";
const server = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorUrl })).register(
  NETWORK,
  new ExactEvmScheme(),
);
const accepts = { scheme: "exact", price, network: NETWORK, payTo };
const routes = {
  "GET /v1/tools/echo": { accepts, description: "echo", mimeType: "application/json" },
  "POST /v1/tools/echo": { accepts, description: "echo", mimeType: "application/json" },
};

const app = express();
app.use(express.text({ type: "*/*", limit: "1mb" }));
app.use(paymentMiddleware(routes, server));
app.all("/v1/tools/echo", (req, res) => {
  res.json({ echo: typeof req.body === "string" ? req.body : "", method: req.method });
});

const listener = app.listen(port, "127.0.0.1", () => {
  const addr = listener.address();
  process.stdout.write(JSON.stringify({ event: "ready", url: `http://127.0.0.1:${addr.port}/v1/tools/echo` }) + "\n");
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    listener.close();
    process.exit(0);
  });
}
