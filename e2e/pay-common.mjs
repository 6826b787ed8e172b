// Shared command line and output handling for pay-v1.mjs and pay-v2.mjs.
//
// Usage: node pay-vN.mjs [flags] URL
//   --method M        HTTP method (default GET, or POST when --json is given)
//   --json TEXT       send TEXT as a JSON request body (Content-Type: application/json)
//   --header "K: V"   extra request header (repeatable)
//   --count N         make N sequential paid calls (default 1), one output line each
//   --max-value N     v1 only: the client's maximum payment in atomic units
//                     (x402-fetch's default is 100000 = 0.10 USDC)
//   --no-spend-controls  v2 only: disable @x402/core's default spend controls
//   --also-v1         v2 only: also register the v1 scheme (registerExactEvmScheme)
//   --upto            v2 only: also register the upto scheme (UptoEvmScheme, Permit2)
//   --payment-id ID   v2 only: send the payment-identifier extension with ID
//                     (@x402/extensions appendPaymentIdentifierToExtensions)
//   --resend          after each call, send its paid request again, byte for
//                     byte (a network-level retry); printed as its own line
//                     with "resent":true
// Environment:
//   PAYER_PRIVATE_KEY  (required) payer key, 0x-prefixed 32-byte hex
//   PAYER_RPC_URL      local RPC for any chain reads (v1: the wallet client's
//                      transport); default http://127.0.0.1:8545. The public
//                      Base Sepolia RPC is never used.
//
// Each call prints one JSON line to stdout:
//   {"i":0,"status":200,"ms":12.3,"phases":{"unpaid","sign","paid","at"}|null,
//    "body":"...","json":{...}|null,
//    "paymentResponse":{...}|null,"paymentResponseHeader":"PAYMENT-RESPONSE"|...|null,
//    "paymentRequired":{...}|null,"headers":{...}}
// phases.at holds the wall-clock times (Unix milliseconds, fractional) of
// the unpaid request's start and answer, the paid request's start and the
// call's end, to line the client's view up with the servers' timestamps.
// A call that throws (the client refused to pay, a network error) prints
//   {"i":0,"error":"..."} and the process exits 1 after the remaining calls.
import { parseArgs } from "node:util";

export function parseCommandLine() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      method: { type: "string" },
      json: { type: "string" },
      header: { type: "string", multiple: true, default: [] },
      count: { type: "string", default: "1" },
      "max-value": { type: "string" },
      "no-spend-controls": { type: "boolean", default: false },
      "also-v1": { type: "boolean", default: false },
      upto: { type: "boolean", default: false },
      "payment-id": { type: "string" },
      resend: { type: "boolean", default: false },
    },
  });
  if (positionals.length !== 1) {
    die("usage: node pay-vN.mjs [--method M] [--json BODY] [--header 'K: V'] [--count N] URL");
  }
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1) die(`bad --count ${values.count}`);
  const key = process.env.PAYER_PRIVATE_KEY;
  if (!key || !/^0x[0-9a-fA-F]{64}$/.test(key)) die("set PAYER_PRIVATE_KEY to a 0x-prefixed 32-byte hex key");
  const headers = {};
  for (const h of values.header) {
    const i = h.indexOf(":");
    if (i <= 0) die(`bad --header ${JSON.stringify(h)}, want "Name: value"`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  let body;
  if (values.json !== undefined) {
    try {
      JSON.parse(values.json);
    } catch (e) {
      die(`--json is not valid JSON: ${e.message}`);
    }
    body = values.json;
    headers["Content-Type"] = "application/json";
  }
  return {
    url: positionals[0],
    method: values.method ?? (body !== undefined ? "POST" : "GET"),
    headers,
    body,
    count,
    key,
    rpcUrl: process.env.PAYER_RPC_URL ?? "http://127.0.0.1:8545",
    maxValue: values["max-value"],
    spendControls: !values["no-spend-controls"],
    alsoV1: values["also-v1"],
    upto: values.upto,
    paymentId: values["payment-id"],
    resend: values.resend,
  };
}

export function die(msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

function decodeB64JSON(value) {
  try {
    return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
  } catch {
    return null;
  }
}

// capturingFetch returns a fetch that remembers the last request it sent
// carrying a payment header (capture.last: url, method, headers, body), and
// when each request went out and its answer came back (capture.marks:
// [paid, start, end] in performance.now() milliseconds).
export function capturingFetch(capture) {
  return async (input, init) => {
    const req = input instanceof Request ? input : new Request(input, init);
    const paid = Boolean(req.headers.get("PAYMENT-SIGNATURE") || req.headers.get("X-PAYMENT"));
    const start = performance.now();
    if (paid && capture.resend) {
      const headers = {};
      req.headers.forEach((v, k) => {
        headers[k] = v;
      });
      const body = req.body ? await req.clone().text() : undefined;
      capture.last = { url: req.url, method: req.method, headers, body };
    }
    const res = await fetch(req);
    (capture.marks ??= []).push([paid, start, performance.now()]);
    return res;
  };
}

// runCalls makes opts.count sequential calls with doFetch(url, init) and
// prints one line per call. decodeResponse(name, value) decodes a payment
// response header with the client library's own decoder. With
// opts.resend, capture (see capturingFetch) holds each call's paid
// request, sent again with plain fetch after the call.
export async function runCalls(opts, doFetch, decodeResponse, capture) {
  let failed = false;
  // The paid request is copied only to be resent (copying it costs time
  // the latency measurement would count).
  if (capture) capture.resend = opts.resend;
  for (let i = 0; i < opts.count; i++) {
    const init = { method: opts.method, headers: { ...opts.headers } };
    if (opts.body !== undefined) init.body = opts.body;
    await callOnce(i, false, () => doFetch(opts.url, init));
    if (opts.resend) {
      const last = capture?.last;
      if (!last) {
        failed = true;
        out({ i, resent: true, error: "no paid request to resend" });
        continue;
      }
      capture.last = undefined;
      await callOnce(i, true, () => fetch(last.url, { method: last.method, headers: last.headers, body: last.body }));
    }
  }
  process.exit(failed ? 1 : 0);

  async function callOnce(i, resent, send) {
    if (capture) capture.marks = [];
    const t0 = performance.now();
    try {
      const res = await send();
      const text = await res.text();
      const ms = performance.now() - t0;
      // The unpaid request and its 402, the client's work between them
      // (reading the 402, signing), and the paid request, when both went
      // through capturingFetch.
      let phases = null;
      const marks = capture?.marks ?? [];
      const unpaid = marks.find((m) => !m[0]);
      const paidMark = marks.find((m) => m[0]);
      if (unpaid && paidMark) {
        const r = (x) => Math.round(x * 1000) / 1000;
        const wall = (x) => Math.round((performance.timeOrigin + x) * 1000) / 1000;
        phases = {
          unpaid: r(unpaid[2] - unpaid[1]),
          sign: r(paidMark[1] - unpaid[2]),
          paid: r(ms - (paidMark[1] - t0)),
          at: [wall(unpaid[1]), wall(unpaid[2]), wall(paidMark[1]), wall(t0 + ms)],
        };
      }
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {}
      let paymentResponse = null;
      let paymentResponseHeader = null;
      for (const name of ["PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"]) {
        const v = res.headers.get(name);
        if (v) {
          paymentResponseHeader = name;
          try {
            paymentResponse = decodeResponse(name, v);
          } catch (e) {
            paymentResponse = { decodeError: e.message, raw: v };
          }
          break;
        }
      }
      const pr = res.headers.get("PAYMENT-REQUIRED");
      const headers = {};
      res.headers.forEach((v, k) => {
        headers[k] = v;
      });
      out({
        i,
        resent,
        status: res.status,
        ms: Math.round(ms * 1000) / 1000,
        phases,
        body: text,
        json,
        paymentResponse,
        paymentResponseHeader,
        paymentRequired: pr ? decodeB64JSON(pr) : null,
        headers,
      });
    } catch (e) {
      failed = true;
      const cause = e?.cause ? `: ${e.cause.message ?? e.cause}` : "";
      out({ i, resent, error: `${e instanceof Error ? e.message : String(e)}${cause}`, ms: performance.now() - t0 });
    }
  }
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj, (_, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n");
}
