#!/usr/bin/env node
// Pays for calls to URL with the legacy v1 client, x402-fetch 1.2.0. Its
// signer is a viem wallet client for Base Sepolia (chain id 84532, which
// x402-fetch maps to the v1 network "base-sepolia") whose transport is the
// LOCAL RPC (PAYER_RPC_URL), never the public one. x402-fetch's createSigner
// would use the public RPC, so the wallet client is built here the same way
// with our transport. Flags, environment and output: see pay-common.mjs.
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { wrapFetchWithPayment, decodeXPaymentResponse } from "x402-fetch";
import { parseCommandLine, runCalls, die } from "./pay-common.mjs";

const opts = parseCommandLine();
const chain = { ...baseSepolia, rpcUrls: { default: { http: [opts.rpcUrl] } } };
const wallet = createWalletClient({
  chain,
  transport: http(opts.rpcUrl),
  account: privateKeyToAccount(opts.key),
}).extend(publicActions);

let maxValue;
if (opts.maxValue !== undefined) {
  if (!/^[0-9]+$/.test(opts.maxValue)) die(`bad --max-value ${opts.maxValue}`);
  maxValue = BigInt(opts.maxValue);
}
const fetchWithPayment = wrapFetchWithPayment(fetch, wallet, maxValue);

await runCalls(opts, fetchWithPayment, (_name, value) => decodeXPaymentResponse(value));
