#!/usr/bin/env node
// Pays for toolgate tools over MCP (x402 v2, the MCP transport of
// coinbase/x402 specs/transports-v2/mcp.md) with the official TypeScript
// SDK client and the reference x402 client packages: x402Client from
// @x402/core with ExactEvmScheme from @x402/evm for eip155:84532, a viem
// account from PAYER_PRIVATE_KEY, chain reads on PAYER_RPC_URL (default
// http://127.0.0.1:8545; never a public RPC). Default spend controls stay on.
//
// The steps of mcp-common.mjs, plus:
//   {"op":"unpaid","name":N,"arguments":{..}}
//       tools/call without payment. The result must be a payment-required
//       tool error: structuredContent (or, as clients fall back to it,
//       content[0].text parsed as JSON) with x402Version and accepts[]. It
//       becomes the requirements of the next "pay".
//       Prints {"step","op","result","paymentRequired"} (paymentRequired
//       null if the result was not one).
//   {"op":"pay","name":N,"arguments":{..},"paymentId":ID}
//       builds a fresh PaymentPayload for accepts[0] of the last unpaid
//       answer (x402Client.createPaymentPayload, which signs an EIP-3009
//       authorization) and calls with params._meta["x402/payment"] = that
//       payload object. With paymentId, the payload carries the
//       payment-identifier extension with that id (@x402/extensions
//       appendPaymentIdentifierToExtensions). Prints
//       {"step","op","payload","result"}.
//   {"op":"replay"}
//       the last "pay" again, same payload and arguments. Prints
//       {"step","op","payload","result"}.
import { privateKeyToAccount } from "viem/accounts";
import { x402Client } from "@x402/core/client";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { appendPaymentIdentifierToExtensions } from "@x402/extensions/payment-identifier";
import { callTool, connect, die, finish, ms, out, parseCommandLine, runSteps } from "./mcp-common.mjs";

const NETWORK = "eip155:84532";
const opts = parseCommandLine("mcp-pay.mjs");
const key = process.env.PAYER_PRIVATE_KEY;
if (!key || !/^0x[0-9a-fA-F]{64}$/.test(key)) die("set PAYER_PRIVATE_KEY to a 0x-prefixed 32-byte hex key");
const rpcUrl = process.env.PAYER_RPC_URL ?? "http://127.0.0.1:8545";

const account = privateKeyToAccount(key);
// accepts[0], as the brief of the test says; the default selector would
// also pick the first requirement this client can pay.
const payer = new x402Client((_version, accepts) => accepts[0]);
payer.register(NETWORK, new ExactEvmScheme(account, { rpcUrl }));
let paymentId; // of the payload being built ("pay" step's paymentId)
payer.onBeforePaymentCreation(async ({ paymentRequired }) => {
  if (paymentId !== undefined && paymentRequired.extensions) {
    appendPaymentIdentifierToExtensions(paymentRequired.extensions, paymentId);
  }
});

// paymentRequiredOf detects a payment-required tool result as the x402 MCP
// clients do: isError with structuredContent holding x402Version and an
// accepts array, else content[0].text parsed as JSON.
function paymentRequiredOf(result) {
  if (!result?.isError) return null;
  const isPR = (v) => v && typeof v === "object" && v.x402Version && Array.isArray(v.accepts);
  if (isPR(result.structuredContent)) return result.structuredContent;
  const text = result.content?.[0]?.type === "text" ? result.content[0].text : null;
  try {
    const v = JSON.parse(text);
    if (isPR(v)) return v;
  } catch {}
  return null;
}

const { client } = await connect(opts);
const failed = await runSteps(client, opts.steps, {
  async unpaid(step, i, ctx) {
    const t0 = performance.now();
    const result = await callTool(client, step.name, step.arguments);
    const pr = paymentRequiredOf(result);
    if (pr) ctx.required = { name: step.name, pr };
    out({ step: i, op: "unpaid", ms: ms(t0), result, paymentRequired: pr });
  },
  async pay(step, i, ctx) {
    if (!ctx.required || ctx.required.name !== step.name) {
      throw new Error(`pay ${step.name}: no payment-required answer for it yet (run "unpaid" first)`);
    }
    paymentId = step.paymentId;
    // A copy: the id is appended to the requirements' extensions.
    const payload = await payer.createPaymentPayload(structuredClone(ctx.required.pr));
    ctx.payment = { name: step.name, arguments: step.arguments, payload };
    const t0 = performance.now();
    const result = await callTool(client, step.name, step.arguments, { "x402/payment": payload });
    out({ step: i, op: "pay", ms: ms(t0), payload, result });
  },
  async replay(_step, i, ctx) {
    if (!ctx.payment) throw new Error("replay: no payment made yet");
    const { name, arguments: args, payload } = ctx.payment;
    const t0 = performance.now();
    const result = await callTool(client, name, args, { "x402/payment": payload });
    out({ step: i, op: "replay", ms: ms(t0), payload, result });
  },
});
await finish(client, failed);
