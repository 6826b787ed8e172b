#!/usr/bin/env node
// Compiles the end-to-end test contracts with solc-js (pinned in
// package.json) into committed JSON artifacts: contracts/<Name>.json with the
// ABI and the runtime bytecode that the Go helpers place with anvil_setCode.
//
//   node build-token.mjs           write contracts/*.json
//   node build-token.mjs --check   compile and compare; exit 1 if any
//                                  committed artifact is stale
//
// The compiler settings are fixed here (optimizer, EVM version, no metadata
// hash) so that the output is byte-for-byte reproducible.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const contractsDir = join(here, "contracts");
const CONTRACTS = ["TestUSDC", "TestMulticall3", "TestSmartWallet", "TestWalletFactory", "TestPermit2", "TestUptoPermit2Proxy"];

const sources = {};
for (const name of CONTRACTS) {
  sources[`${name}.sol`] = { content: readFileSync(join(contractsDir, `${name}.sol`), "utf8") };
}

const settings = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.deployedBytecode.object", "evm.bytecode.object"] } },
};

const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  process.stderr.write(e.formattedMessage + "\n");
}
if (errors.length > 0) {
  process.exit(1);
}

const check = process.argv.includes("--check");
let stale = 0;
for (const name of CONTRACTS) {
  const file = `${name}.sol`;
  const c = output.contracts[file][name];
  const artifact = {
    contractName: name,
    source: `contracts/${file}`,
    sourceSha256: createHash("sha256").update(sources[file].content).digest("hex"),
    compiler: `solc-js ${solc.version()}`,
    settings: { evmVersion: settings.evmVersion, optimizer: settings.optimizer, metadata: settings.metadata },
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  };
  const text = JSON.stringify(artifact, null, 2) + "\n";
  const out = join(contractsDir, `${name}.json`);
  if (check) {
    const old = existsSync(out) ? readFileSync(out, "utf8") : "";
    if (old !== text) {
      process.stderr.write(`stale: contracts/${name}.json differs from a fresh build of ${file}; run node e2e/build-token.mjs\n`);
      stale++;
    } else {
      process.stdout.write(`ok: contracts/${name}.json (${(artifact.deployedBytecode.length - 2) / 2} bytes runtime)\n`);
    }
  } else {
    writeFileSync(out, text);
    process.stdout.write(`wrote contracts/${name}.json (${(artifact.deployedBytecode.length - 2) / 2} bytes runtime)\n`);
  }
}
process.exit(stale > 0 ? 1 : 0);
