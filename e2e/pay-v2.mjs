#!/usr/bin/env node
// Pays for calls to URL with the reference v2 client, @x402/fetch
// (wrapFetchWithPayment + x402Client, ExactEvmScheme registered for
// eip155:84532 with a viem account from PAYER_PRIVATE_KEY; with --upto also
// UptoEvmScheme from @x402/evm/upto/client). Default spend
// controls stay on, as for any default agent, unless --no-spend-controls.
// Flags, environment and output: see pay-common.mjs.
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme, registerExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { appendPaymentIdentifierToExtensions } from "@x402/extensions/payment-identifier";
import { capturingFetch, parseCommandLine, runCalls } from "./pay-common.mjs";

const opts = parseCommandLine();
const account = privateKeyToAccount(opts.key);
const client = new x402Client();
if (opts.alsoV1) {
  registerExactEvmScheme(client, { signer: account, schemeOptions: { rpcUrl: opts.rpcUrl } });
} else {
  client.register("eip155:84532", new ExactEvmScheme(account, { rpcUrl: opts.rpcUrl }));
}
if (opts.upto) {
  // Registered after exact: the client picks the first of the server's
  // accepts entries it can pay, so the server's order decides.
  client.register("eip155:84532", new UptoEvmScheme(account, { rpcUrl: opts.rpcUrl }));
}
if (!opts.spendControls) {
  client.setSpendControls(false);
}
if (opts.paymentId !== undefined) {
  client.onBeforePaymentCreation(async ({ paymentRequired }) => {
    if (paymentRequired.extensions) appendPaymentIdentifierToExtensions(paymentRequired.extensions, opts.paymentId);
  });
}
const capture = {};
const fetchWithPayment = wrapFetchWithPayment(capturingFetch(capture), client);

await runCalls(opts, fetchWithPayment, (_name, value) => decodePaymentResponseHeader(value), capture);
