#!/usr/bin/env bash
# bench/run.sh — toolgate's end-to-end benchmark suite, unattended.
#
# Runs wrk on loopback against: the upstream alone, a bare fasthttp proxy,
# the same proxy journaling each call's record in a toolgate ledger before
# answering (bare+ledger, the floor of "recorded before answered"),
# nginx + limit_req, and toolgate (API-key path; 403 policy deny; 402
# unpaid x402), at 1, 32 and 128 connections. Every run is paired with a
# direct run of the upstream just before it, and results are reported as
# ratios, because the machines are shared and noisy. Then bench/scale
# measures RSS and decision latency with 1M keys and 100k active principals.
#
# Writes bench/results/<UTC date-time>.md. Stops every process it started,
# by PID. See docs/BENCHMARKS.md for how to read the results.
#
# Environment (defaults in brackets):
#   BENCH_DURATION  wrk duration of each run [10s]
#   BENCH_CONNS     connection counts [1 32 128]
#   BENCH_ROUNDS    rounds of every (connections, target) pair; ratios are
#                   taken within a round, then their median and range [1]
#   BENCH_SYNC      toolgate --sync: interval or always [interval]
#   BENCH_SCALE     1 to run bench/scale, 0 to skip [1]
#   BENCH_SCALE_KEYS / BENCH_SCALE_ACTIVE  [1000000 / 100000]
#   BENCH_PROFILE   1 to perf-record toolgate during an extra 32-connection run [0]
#   BENCH_PORT_BASE first of the 5 loopback ports used [18081]
#   BENCH_OUT       results file [bench/results/<date>.md]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-"1 32 128"}
ROUNDS=${BENCH_ROUNDS:-1}
SYNC=${BENCH_SYNC:-interval}
SCALE=${BENCH_SCALE:-1}
SCALE_KEYS=${BENCH_SCALE_KEYS:-1000000}
SCALE_ACTIVE=${BENCH_SCALE_ACTIVE:-100000}
PROFILE=${BENCH_PROFILE:-0}
PORT=${BENCH_PORT_BASE:-18081}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${BENCH_OUT:-$ROOT/bench/results/$STAMP.md}

UP_ADDR=127.0.0.1:$PORT
BARE_ADDR=127.0.0.1:$((PORT + 1))
NGINX_ADDR=127.0.0.1:$((PORT + 2))
TG_ADDR=127.0.0.1:$((PORT + 3))
FLOOR_ADDR=127.0.0.1:$((PORT + 4))

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# --- tools ---------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update && apt-get install -y "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v go >/dev/null || die "go is not on PATH"

# --- processes: every one we start is recorded and stopped by PID --------
WORK=$(mktemp -d /tmp/toolgate-bench.XXXXXX)
. bench/lib.sh # PIDS, cleanup, bench_config, bench_request (the working directory is the repository root)

start() { # start NAME CMD...: run in the background, log to $WORK/NAME.log
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	log "started $name (pid $!)"
}

wait_port() { # wait_port ADDR NAME
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	cat "$WORK/$2.log" >&2 || true
	die "$2 did not listen on $1"
}

for addr in $UP_ADDR $BARE_ADDR $NGINX_ADDR $TG_ADDR $FLOOR_ADDR; do
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
		die "$addr is in use; set BENCH_PORT_BASE"
	fi
done

# --- build ---------------------------------------------------------------
log "building into $WORK/bin"
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/toolgate" ./cmd/toolgate
go build -o "$WORK/bin/upstream" ./bench/upstream
go build -o "$WORK/bin/bareproxy" ./bench/bareproxy
go build -o "$WORK/bin/scale" ./bench/scale

# --- configuration -------------------------------------------------------
bench_config "$WORK" "$UP_ADDR"
mkdir -p "$WORK/nginx"
WORKERS=$(nproc)
sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@UPSTREAM@|$UP_ADDR|g" \
	-e "s|@LISTEN@|$NGINX_ADDR|g" -e "s|@WORKERS@|$WORKERS|g" \
	bench/nginx.conf.in >"$WORK/nginx/nginx.conf"

# --- servers -------------------------------------------------------------
ADMIN=bench-admin-$RANDOM$RANDOM
start upstream "$WORK/bin/upstream" -listen "$UP_ADDR"
start bareproxy "$WORK/bin/bareproxy" -listen "$BARE_ADDR" -upstream "$UP_ADDR"
start bareledger "$WORK/bin/bareproxy" -listen "$FLOOR_ADDR" -upstream "$UP_ADDR" -ledger "$WORK/floor"
start nginx "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
start toolgate "$WORK/bin/toolgate" serve --listen "$TG_ADDR" --data "$WORK/data" \
	--tools "$WORK/tools.json" --policies "$WORK/policies.json" --admin-token "$ADMIN" \
	--sync "$SYNC" --log-level warn \
	--x402-pay-to 0x1111111111111111111111111111111111111111 --x402-facilitator http://127.0.0.1:9
TG_PID=${PIDS[-1]}
wait_port "$UP_ADDR" upstream
wait_port "$BARE_ADDR" bareproxy
wait_port "$FLOOR_ADDR" bareledger
wait_port "$NGINX_ADDR" nginx
wait_port "$TG_ADDR" toolgate

KEY=$(curl -sf -X POST "http://$TG_ADDR/credits/keys" -H "Authorization: Bearer $ADMIN" -d '{"name":"bench"}' |
	sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
[ -n "$KEY" ] || die "could not create an API key"

# wrk request: POST, JSON body; the key header unless WRK_NO_KEY is set.
bench_request "$WORK"

# Targets: name, URL, key ("-" for none), expected status.
TARGETS=(
	"bare|http://$BARE_ADDR/tools/bench/echo|$KEY|200"
	"bare+ledger|http://$FLOOR_ADDR/tools/bench/echo|$KEY|200"
	"nginx|http://$NGINX_ADDR/tools/bench/echo|$KEY|200"
	"toolgate|http://$TG_ADDR/tools/bench/echo|$KEY|200"
	"toolgate-403|http://$TG_ADDR/tools/bench/denied|$KEY|403"
	"toolgate-402|http://$TG_ADDR/tools/bench/echo|-|402"
)
DIRECT_URL="http://$UP_ADDR/tools/bench/echo"

# Check every path answers what it should before measuring anything.
status_of() { # status_of URL KEY
	local h=()
	[ "$2" != "-" ] && h=(-H "X-API-Key: $2")
	curl -s -o /dev/null -w '%{http_code}' -X POST "${h[@]}" -H 'Content-Type: application/json' \
		-d '{"text":"Invoice 42 from ACME, total $120"}' "$1"
}
[ "$(status_of "$DIRECT_URL" "$KEY")" = 200 ] || die "upstream does not answer 200"
for t in "${TARGETS[@]}"; do
	IFS='|' read -r name url key want <<<"$t"
	got=$(status_of "$url" "$key")
	[ "$got" = "$want" ] || die "$name answered $got, want $want"
done
log "all paths answer as expected"

# run_wrk NAME URL KEY CONNS DURATION: writes $WORK/wrk/NAME-CONNS.txt
mkdir -p "$WORK/wrk"
run_wrk() {
	local threads=$(($4 < 2 ? 1 : 2))
	local key=$3
	[ "$key" = "-" ] && key=
	BENCH_KEY=$key wrk -t"$threads" -c"$4" -d"$5" --latency -s "$WORK/req.lua" "$2" >"$WORK/wrk/$1-$4.txt" 2>&1 ||
		die "wrk $1 -c$4 failed: $(cat "$WORK/wrk/$1-$4.txt")"
}

# parse FILE: prints "rps p50us p99us non2xx requests socket_errors"
parse() {
	awk '
	function us(v) {
		if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
		if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
		if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60e6 }
		if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1e6 }
		return v + 0
	}
	$1 == "50%" { p50 = us($2) }
	$1 == "99%" { p99 = us($2) }
	/^Requests\/sec:/ { rps = $2 }
	/Non-2xx or 3xx responses:/ { bad = $NF }
	/ requests in / { total = $1 }
	/Socket errors:/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
	END { printf "%.0f %.1f %.1f %d %d %d\n", rps, p50, p99, bad + 0, total + 0, sock + 0 }
	' "$1"
}

# --- warm-up --------------------------------------------------------------
log "warm-up (1 s each)"
run_wrk direct-warm "$DIRECT_URL" "$KEY" 32 1s
for t in "${TARGETS[@]}"; do
	IFS='|' read -r name url key want <<<"$t"
	run_wrk "$name-warm" "$url" "$key" 32 1s
done

# --- measured runs: each target right after its own direct run -----------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS=$WORK/results.tsv
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
	for c in $CONNS; do
		for t in "${TARGETS[@]}"; do
			IFS='|' read -r name url key want <<<"$t"
			run=$name@$round
			log "round $round/$ROUNDS, c=$c: direct, then $name ($DURATION each)"
			run_wrk "direct-for-$run" "$DIRECT_URL" "$KEY" "$c" "$DURATION"
			run_wrk "$run" "$url" "$key" "$c" "$DURATION"
			read -r drps dp50 dp99 dbad _ dsock <<<"$(parse "$WORK/wrk/direct-for-$run-$c.txt")"
			read -r rps p50 p99 bad total sock <<<"$(parse "$WORK/wrk/$run-$c.txt")"
			# Errors: socket errors, and answers of the wrong class (wrk counts
			# non-2xx only: for a 403/402 path every 2xx answer is wrong).
			if [ "$want" = 200 ]; then errs=$((bad + sock)); else errs=$((total - bad + sock)); fi
			dbad=$((dbad + dsock))
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
				"$c" "$name" "$rps" "$p50" "$p99" "$drps" "$dp50" "$dp99" "$dbad" "$errs" "$round" >>"$RESULTS"
		done
	done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Status codes of the non-200 targets, for the record (counted by toolgate's answers).
for name in toolgate-403 toolgate-402; do
	for c in $CONNS; do
		for round in $(seq "$ROUNDS"); do
			grep -q "Non-2xx or 3xx responses" "$WORK/wrk/$name@$round-$c.txt" ||
				die "$name -c$c (round $round): no non-2xx answers; the path measured is not the one intended"
		done
	done
done

# --- optional profile -----------------------------------------------------
PROFILE_TXT=
if [ "$PROFILE" = 1 ]; then
	if command -v perf >/dev/null; then
		log "profiling toolgate under wrk -c32 (perf record, 5 s)"
		( BENCH_KEY=$KEY wrk -t2 -c32 -d8s -s "$WORK/req.lua" "http://$TG_ADDR/tools/bench/echo" >/dev/null 2>&1 ) &
		wrkpid=$!
		PIDS+=($wrkpid)
		sleep 1
		perf record -F 999 -g -o "$WORK/perf.data" -p "$TG_PID" -- sleep 5 >/dev/null 2>&1 || true
		wait "$wrkpid" || true
		PROFILE_TXT=$(
			echo "# self time, top 25 symbols (kernel [k] and toolgate [.])"
			perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
				grep -E '^ +[0-9]' | head -25 | sed 's/ *- *- *$//' || true
			echo
			echo "# inclusive time (children), toolgate's own functions and the stages they call"
			perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
				grep -E '^ +[0-9]' | grep -E 'toolgate/|fasthttp\.\(\*(HostClient|Server)\)|badger|syscall\.Syscall|runtime\.(gcBgMarkWorker|mallocgc)$' |
				head -30 | sed 's/ *- *- *$//' || true
		)
	else
		log "perf not installed; skipping the profile (apt-get install linux-perf)"
	fi
fi

# --- scale -----------------------------------------------------------------
SCALE_MD=
if [ "$SCALE" = 1 ]; then
	log "scale: $SCALE_KEYS keys, $SCALE_ACTIVE active principals"
	SCALE_MD=$("$WORK/bin/scale" -keys "$SCALE_KEYS" -active "$SCALE_ACTIVE" -dir "$WORK" 2>"$WORK/scale.log") ||
		die "scale failed: $(cat "$WORK/scale.log")"
fi

# --- report ------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
{
	echo "# toolgate end-to-end benchmark, $STAMP"
	echo
	echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/{print $2}') GiB,"
	echo "Linux $(uname -r); $(go version | cut -d' ' -f3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $("$NGINX" -v 2>&1 | cut -d' ' -f3)."
	echo "Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (work tree modified)')."
	echo "Load average before / after the wrk runs: $LOAD_START / $LOAD_END."
	echo
	echo "Command: \`BENCH_DURATION=$DURATION BENCH_CONNS=\"$CONNS\" BENCH_ROUNDS=$ROUNDS BENCH_SYNC=$SYNC bench/run.sh\`;"
	echo "each run \`wrk -t{1 at 1 connection, else 2} -c{conns} -d$DURATION --latency -s req.lua URL\`"
	echo "(POST, 43-byte JSON body, X-API-Key header except on the 402 path), right after the same"
	echo "wrk run against the upstream directly. toolgate: \`--sync $SYNC\`, x402 on."
	echo
	echo "## Throughput and latency, each target paired with its direct run"
	echo
	echo "| conns | target | req/s | p50 µs | p99 µs | direct req/s | direct p50 µs | ÷ direct | + p50 µs | vs nginx | vs bare | errors |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' -v part=table -f "$ROOT/bench/report.awk" "$RESULTS"
	echo
	echo "÷ direct = req/s ÷ the paired direct run's req/s. + p50 = p50 − the paired direct p50 (the"
	echo "latency the proxy adds). vs nginx, vs bare = (÷ direct) ÷ nginx's (or bare's) ÷ direct at the same"
	echo "connection count: throughput relative to that proxy, each normalized by its own direct run."
	echo "errors: answers other than the one the path should give (non-2xx where 200 is expected)."
	if [ "$ROUNDS" -gt 1 ]; then
		echo "With $ROUNDS rounds (every pair measured once per round, rounds one after the other), each"
		echo "cell is the median over the rounds and its range; a ratio is taken within each round first."
	fi
	echo
	echo "## Targets"
	echo
	awk -F'\t' -v part=targets -v conns="$CONNS" -f "$ROOT/bench/report.awk" "$RESULTS"
	if [ -n "$SCALE_MD" ]; then
		echo
		echo "## Scale: $SCALE_KEYS keys stored, $SCALE_ACTIVE principals active"
		echo
		echo "\`bench/scale -keys $SCALE_KEYS -active $SCALE_ACTIVE\` (identity.Open over badger, then"
		echo "Authenticate → Decide → Admit → Reserve → Commit per call, principals in random order),"
		echo "paired with a 1 000-key baseline in the same process."
		echo
		echo "$SCALE_MD"
	fi
	if [ -n "$PROFILE_TXT" ]; then
		echo
		echo "## Profile: toolgate under wrk -c32 (perf, self time, top symbols)"
		echo
		echo '```'
		echo "$PROFILE_TXT"
		echo '```'
	fi
	echo
	echo "## Raw wrk output"
	echo
	echo '<details><summary>every measured run</summary>'
	echo
	echo '```'
	for round in $(seq "$ROUNDS"); do
		for c in $CONNS; do
			for t in "${TARGETS[@]}"; do
				name=${t%%|*}@$round
				for f in "direct-for-$name-$c" "$name-$c"; do
					echo "== $f"
					cat "$WORK/wrk/$f.txt"
				done
			done
		done
	done
	echo '```'
	echo '</details>'
} >"$OUT"

log "wrote $OUT"
sed -n '/^## Throughput/,/^## Raw/p' "$OUT" | sed '$d'
