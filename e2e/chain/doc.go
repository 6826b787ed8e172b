// Package chain runs toolgate's end-to-end payment infrastructure for Go
// tests: a local anvil EVM chain with Base Sepolia's chain id (84532), the
// TestUSDC EIP-3009 token placed at Base Sepolia's USDC address, the x402
// reference facilitator (e2e/facilitator.mjs) and the npm x402 clients
// (e2e/pay-v2.mjs, e2e/pay-v1.mjs).
//
// It owns the processes it starts (each is killed, by its own PID, at
// t.Cleanup) and the well-known anvil test accounts. It must not be imported
// by production code: it is test infrastructure, shells out to node and
// anvil, and reads files from the e2e directory of the source tree.
//
// The tools come from e2e/node_modules, installed by scripts/e2e-deps.sh.
// When they are missing or stale, every helper skips the test with a message
// that says so, except under CI (CI set in the environment), where it fails
// instead, so that a CI run cannot pass by skipping.
//
// Typical use:
//
//	a := chain.Start(t)
//	chain.DeployUSDC(t, a)
//	chain.Mint(t, a, chain.Payer.Address, 5*money.PerUSD)
//	f := chain.StartFacilitator(t, a, chain.FacilitatorConfig{})
//	// ... start the gateway with f.URL() ...
//	res := chain.PayV2(t, gatewayURL+"/v1/tools/x", chain.PayOptions{RPC: a.RPC()})
//
// Each test should start its own chain: anvil starts in about 0.1 s, and
// separate chains keep tests independent and free of nonce races.
package chain
