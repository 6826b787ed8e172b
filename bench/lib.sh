# bench/lib.sh: what the end-to-end benchmark scripts share. Source it
# after setting WORK (a temporary directory of the run's own).

# Every process a script starts is recorded in PIDS; cleanup stops them
# by PID (TERM, then KILL after 5 s) and removes $WORK, on exit, failure
# or Ctrl-C.
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bench_config DIR UPSTREAM: writes DIR/tools.json (bench/echo, and
# bench/denied that the api_key tier denies, both on UPSTREAM) and
# DIR/policies.json (quotas so high they never refuse, no spend cap).
bench_config() {
	cat >"$1/tools.json" <<CONF
{ "tools": [
  { "id": "bench/echo", "rate_class": "light", "price_usd": "0.000001",
    "upstream": "http://$2/extract", "timeout_ms": 30000 },
  { "id": "bench/denied", "rate_class": "light", "price_usd": "0.000001",
    "upstream": "http://$2/extract", "timeout_ms": 30000 } ] }
CONF
	cat >"$1/policies.json" <<'CONF'
{ "version": 1, "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 100000000 } },
  "tiers": {
    "api_key": { "deny_tools": ["bench/denied"], "daily_spend_cap_usd": null },
    "wallet": {}, "unknown_wallet": {} },
  "enforced": { "deny_tools": [] } }
CONF
}

# bench_request DIR: writes DIR/req.lua, wrk's request in every run: POST,
# a 43-byte JSON body, X-API-Key from BENCH_KEY when it is set.
bench_request() {
	cat >"$1/req.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"text":"Invoice 42 from ACME, total $120"}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key ~= nil and key ~= "" then wrk.headers["X-API-Key"] = key end
LUA
}
