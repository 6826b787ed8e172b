#!/usr/bin/env bash
# bench/cluster.sh — cluster mode against single-node mode, paired in one run.
#
# Starts one loopback upstream, one redis-server, a single-node toolgate and
# a cluster-mode toolgate (on that Redis), both with the same configuration,
# and runs wrk on the API-key path of a free tool and of a priced tool
# against each, alternating (single, cluster, single, cluster) at 32 and at
# 1 connection. Reports req/s, p50 and p99, the cluster/single ratios, and
# Redis round trips per call (commands sent by clients over the cluster runs,
# from INFO commandstats, ÷ requests; a script is one command). Run it under
# `flock /tmp/toolgate-load.lock bench/cluster.sh` on a shared machine.
#
# Environment: BENCH_DURATION [10s], BENCH_PORT_BASE [18181], BENCH_ROUNDS [2].
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
PORT=${BENCH_PORT_BASE:-18181}
ROUNDS=${BENCH_ROUNDS:-2}
UP=127.0.0.1:$PORT
REDIS_PORT=$((PORT + 1))
SINGLE=127.0.0.1:$((PORT + 2))
CLUSTER=127.0.0.1:$((PORT + 3))

log() { printf '[cluster-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
command -v wrk >/dev/null || die "wrk is not on PATH (apt-get install wrk)"
command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
	die "redis-server or redis-cli is not on PATH (apt-get install redis-server)"

WORK=$(mktemp -d /tmp/toolgate-cluster-bench.XXXXXX)
. bench/lib.sh # PIDS, cleanup, bench_request (the working directory is the repository root)
start() { local name=$1; shift; "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!); }
wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$WORK/$2.log" >&2 || true
	die "$2 did not listen on $1"
}

go build -o "$WORK/toolgate" ./cmd/toolgate
go build -o "$WORK/upstream" ./bench/upstream
cat >"$WORK/tools.json" <<EOF
{ "tools": [
  { "id": "bench/free", "rate_class": "light", "upstream": "http://$UP/extract", "timeout_ms": 30000 },
  { "id": "bench/paid", "rate_class": "light", "price_usd": "0.000001",
    "upstream": "http://$UP/extract", "timeout_ms": 30000 } ] }
EOF
cat >"$WORK/policies.json" <<'EOF'
{ "version": 1, "fail_mode": "open",
  "defaults": { "rate_class_quota": { "light": 100000000 } },
  "tiers": { "api_key": { "daily_spend_cap_usd": 1000000 }, "wallet": {}, "unknown_wallet": {} },
  "enforced": { "deny_tools": [] } }
EOF
ADMIN=bench-admin-$RANDOM$RANDOM
start upstream "$WORK/upstream" -listen "$UP"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK"
start single "$WORK/toolgate" serve --listen "$SINGLE" --data "$WORK/single" --tools "$WORK/tools.json" \
	--policies "$WORK/policies.json" --admin-token "$ADMIN" --log-level warn
wait_port "$UP" upstream
wait_port "127.0.0.1:$REDIS_PORT" redis
start cluster "$WORK/toolgate" serve --listen "$CLUSTER" --data "$WORK/cluster" --tools "$WORK/tools.json" \
	--policies "$WORK/policies.json" --admin-token "$ADMIN" --log-level warn \
	--cluster-redis "redis://127.0.0.1:$REDIS_PORT/0" --node-id bench-node
wait_port "$SINGLE" single
wait_port "$CLUSTER" cluster

key_of() {
	curl -sf -X POST "http://$1/credits/keys" -H "Authorization: Bearer $ADMIN" -d '{"name":"bench"}' |
		sed -n 's/.*"secret":"\([^"]*\)".*/\1/p'
}
KEY_SINGLE=$(key_of "$SINGLE")
KEY_CLUSTER=$(key_of "$CLUSTER")
[ -n "$KEY_SINGLE" ] && [ -n "$KEY_CLUSTER" ] || die "could not create keys"
bench_request "$WORK"
for t in free paid; do
	for a in "$SINGLE|$KEY_SINGLE" "$CLUSTER|$KEY_CLUSTER"; do
		code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "X-API-Key: ${a#*|}" \
			-H 'Content-Type: application/json' -d '{}' "http://${a%|*}/tools/bench/$t")
		[ "$code" = 200 ] || die "${a%|*} bench/$t answered $code"
	done
done

redis_cmds() { # commands sent by clients (round trips, pipelined or not): scripts run and plain
	# commands, not the commands scripts run inside Redis (commandstats counts those too)
	redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
		/^cmdstat_(evalsha|eval|evalsha_ro|eval_ro|get|xrange|hgetall|publish|subscribe|ping)/ { n += $3 }
		END { print n + 0 }'
}
parse() { # FILE → rps p50us p99us requests non2xx
	awk 'function us(v) {
		if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
		if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
		if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1e6 }
		return v + 0 }
	$1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) }
	/^Requests\/sec:/ { rps = $2 } / requests in / { total = $1 }
	/Non-2xx or 3xx responses:/ { bad = $NF }
	END { printf "%.0f %.1f %.1f %d %d\n", rps, p50, p99, total, bad + 0 }' "$1"
}
run() { # NAME ADDR KEY TOOL CONNS
	local threads=$(($5 < 2 ? 1 : 2))
	BENCH_KEY=$3 wrk -t$threads -c"$5" -d"$DURATION" --latency -s "$WORK/req.lua" "http://$2/tools/bench/$4" >"$WORK/$1.txt" 2>&1
}

log "warm-up"
run warm-s "$SINGLE" "$KEY_SINGLE" paid 32 >/dev/null
DURATION=2s run warm-c "$CLUSTER" "$KEY_CLUSTER" paid 32
RES=$WORK/res.tsv
: >"$RES"
for r in $(seq "$ROUNDS"); do
	for tool in free paid; do
		for c in 32 1; do
			log "round $r: $tool c=$c (single, then cluster, $DURATION each)"
			run "s-$tool-$c-$r" "$SINGLE" "$KEY_SINGLE" "$tool" "$c"
			before=$(redis_cmds)
			run "c-$tool-$c-$r" "$CLUSTER" "$KEY_CLUSTER" "$tool" "$c"
			after=$(redis_cmds)
			read -r srps sp50 sp99 _ sbad <<<"$(parse "$WORK/s-$tool-$c-$r.txt")"
			read -r crps cp50 cp99 ctotal cbad <<<"$(parse "$WORK/c-$tool-$c-$r.txt")"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$tool" "$c" "$srps" "$sp50" "$sp99" \
				"$crps" "$cp50" "$cp99" "$(awk -v a="$after" -v b="$before" -v n="$ctotal" 'BEGIN{printf "%.2f", (a-b)/n}')" \
				"$((sbad + cbad))" >>"$RES"
		done
	done
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "redis: $(redis-server --version | awk '{print $3}'), wrk $DURATION per run"
echo
echo "| round | tool | conns | single req/s | single p50 µs | single p99 µs | cluster req/s | cluster p50 µs | cluster p99 µs | ratio req/s | added p50 µs | added p99 µs | redis round trips/call | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %+.0f | %+.0f | %s | %s |\n",
	$1, $2, $3, $4, $5, $6, $7, $8, $9, $7 / $4, $8 - $5, $9 - $6, $10, $11 }' "$RES"
