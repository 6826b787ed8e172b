#!/usr/bin/env bash
# bench/percall.sh — CPU, context switches and syscalls per call of the
# real processes, toolgate against the bare fasthttp proxy (and, with
# PERCALL_BASE, against toolgate built at another commit), in paired
# rounds.
#
# For each connection count and round it runs, in the order
# bare, base, new, new, base, bare (base only with PERCALL_BASE), one
# `wrk -c{conns}` with bench/run.sh's request and, over it,
# `perf stat -p PID` on the proxy (context switches, migrations, and the
# read/write/pwrite64/epoll_pwait/futex/nanosleep syscalls) and the
# utime+stime deltas of the proxy, the upstream and wrk from /proc; each
# divided by the calls wrk completed. One line per run.
#
# Environment (defaults in brackets):
#   PERCALL_CONNS     connection counts [1 32]
#   PERCALL_DURATION  wrk duration of each run [3s]
#   PERCALL_ROUNDS    rounds per connection count [2]
#   PERCALL_PATH      tool path: echo (API key, 200), denied (403), nokey (402) [echo]
#   PERCALL_BASE      a commit to build as "base" (git archive) [none]
#   PERCALL_NEW_ENV   environment for the "new" toolgate, e.g. "GOGC=200" [none]
#   PERCALL_BASE_ENV  environment for the "base" toolgate (also without PERCALL_BASE:
#                     then base is this tree's build with that environment) [none]
#   PERCALL_NEW_ARGS / PERCALL_BASE_ARGS  extra `toolgate serve` flags [none]
#   PERCALL_ORDER     the runs of one round, from direct (wrk on the upstream itself), nginx
#                     (bench/nginx.conf.in), bare, base, new [bare base new new base bare, or
#                     bare new new bare without a base]
#   PERCALL_PIN       "W:U:P": CPU lists (taskset) for wrk, the upstream and the proxies,
#                     e.g. "0:0:0" (every hand-off on one CPU) or "0:0:1" [none: the scheduler's]
#   PERCALL_PORT_BASE first of the 4 loopback ports used [18781]
#
# Run it under `flock /tmp/toolgate-load.lock` on a shared machine.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CONNS=${PERCALL_CONNS:-"1 32"}
DURATION=${PERCALL_DURATION:-3s}
ROUNDS=${PERCALL_ROUNDS:-2}
TPATH=${PERCALL_PATH:-echo}
BASE=${PERCALL_BASE:-}
PORT=${PERCALL_PORT_BASE:-18781}

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/toolgate-percall.XXXXXX)
. bench/lib.sh # PIDS, cleanup, bench_config, bench_request (the working directory is the repository root)

UP=127.0.0.1:$PORT BARE=127.0.0.1:$((PORT + 1)) NEW=127.0.0.1:$((PORT + 2)) BASEADDR=127.0.0.1:$((PORT + 3))
NGINXADDR=127.0.0.1:$((PORT + 4))

mkdir -p "$WORK/bin"
go build -o "$WORK/bin/toolgate" ./cmd/toolgate
go build -o "$WORK/bin/upstream" ./bench/upstream
go build -o "$WORK/bin/bareproxy" ./bench/bareproxy
BASE_BIN=$WORK/bin/toolgate
if [ -n "$BASE" ]; then
	mkdir -p "$WORK/base"
	git archive "$BASE" | tar -x -C "$WORK/base"
	(cd "$WORK/base" && go build -o "$WORK/bin/toolgate-base" ./cmd/toolgate)
	BASE_BIN=$WORK/bin/toolgate-base
fi
WITH_BASE=0
[ -n "$BASE" ] || [ -n "${PERCALL_BASE_ENV:-}" ] || [ -n "${PERCALL_BASE_ARGS:-}" ] && WITH_BASE=1

bench_config "$WORK" "$UP"

ADMIN=percall-admin-$RANDOM$RANDOM
start() { # start NAME ENV CMD...
	local name=$1 envs=$2
	shift 2
	# shellcheck disable=SC2086
	env $envs "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	eval "PID_${name//-/_}=$!"
}
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on $1" >&2
	exit 1
}
serve_args() { # serve_args ADDR DATA
	echo serve --listen "$1" --data "$2" --tools "$WORK/tools.json" --policies "$WORK/policies.json" \
		--admin-token "$ADMIN" --sync interval --log-level warn \
		--x402-pay-to 0x1111111111111111111111111111111111111111 --x402-facilitator http://127.0.0.1:9
}
start upstream "" "$WORK/bin/upstream" -listen "$UP"
start bare "" "$WORK/bin/bareproxy" -listen "$BARE" -upstream "$UP"
# shellcheck disable=SC2046
start new "${PERCALL_NEW_ENV:-}" "$WORK/bin/toolgate" $(serve_args "$NEW" "$WORK/data-new") ${PERCALL_NEW_ARGS:-}
if [ "$WITH_BASE" = 1 ]; then
	# shellcheck disable=SC2046
	start base "${PERCALL_BASE_ENV:-}" "$BASE_BIN" $(serve_args "$BASEADDR" "$WORK/data-base") ${PERCALL_BASE_ARGS:-}
fi
WITH_NGINX=0
case " ${PERCALL_ORDER:-} " in *" nginx "*) WITH_NGINX=1 ;; esac
if [ "$WITH_NGINX" = 1 ]; then
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	mkdir -p "$WORK/nginx"
	sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@LISTEN@|$NGINXADDR|g" \
		-e "s|@WORKERS@|$(nproc)|g" bench/nginx.conf.in >"$WORK/nginx/nginx.conf"
	start nginx "" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
	wait_port "$NGINXADDR"
	sleep 0.5
	PID_nginx=$(pgrep -d, -P "$PID_nginx") # the workers
fi
wait_port "$UP"
wait_port "$BARE"
wait_port "$NEW"
[ "$WITH_BASE" = 1 ] && wait_port "$BASEADDR"

PIN_WRK=()
if [ -n "${PERCALL_PIN:-}" ]; then
	IFS=: read -r pin_w pin_u pin_p <<<"$PERCALL_PIN"
	PIN_WRK=(taskset -c "$pin_w")
	taskset -a -p -c "$pin_u" "$PID_upstream" >/dev/null
	workers=${PID_nginx:-}
	for pid in "$PID_bare" "$PID_new" ${PID_base:-} ${workers//,/ }; do taskset -a -p -c "$pin_p" "$pid" >/dev/null; done
fi

key_of() { curl -sf -X POST "http://$1/credits/keys" -H "Authorization: Bearer $ADMIN" -d '{"name":"percall"}' |
	sed -n 's/.*"secret":"\([^"]*\)".*/\1/p'; }
KEY_new=$(key_of "$NEW")
KEY_base=
[ "$WITH_BASE" = 1 ] && KEY_base=$(key_of "$BASEADDR")

bench_request "$WORK"

tool=echo
[ "$TPATH" = denied ] && tool=denied
cpu_ticks() { # the utime+stime of the PIDs (comma-separated)
	local t=0 p
	for p in ${1//,/ }; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}
TCK=$(getconf CLK_TCK)

measure() { # measure NAME CONNS
	local name=$1 c=$2 pid addr key threads=$(($2 < 2 ? 1 : 2))
	case $name in
	direct) pid=$PID_upstream addr=$UP key=$KEY_new ;;
	nginx) pid=$PID_nginx addr=$NGINXADDR key=$KEY_new ;;
	bare) pid=$PID_bare addr=$BARE key=$KEY_new ;;
	new) pid=$PID_new addr=$NEW key=$KEY_new ;;
	base) pid=$PID_base addr=$BASEADDR key=$KEY_base ;;
	esac
	[ "$TPATH" = nokey ] && { [ "$name" = new ] || [ "$name" = base ]; } && key=
	local url="http://$addr/tools/bench/$tool"
	local u0 p0
	u0=$(cpu_ticks "$PID_upstream")
	p0=$(cpu_ticks "$pid")
	(
		TIMEFORMAT='%U %S'
		{ time BENCH_KEY=$key "${PIN_WRK[@]}" wrk -t"$threads" -c"$c" -d"$DURATION" --latency -s "$WORK/req.lua" "$url" >"$WORK/wrk.txt" 2>&1; } 2>"$WORK/wrktime.txt"
	) &
	local wpid=$!
	perf stat -x, -o "$WORK/stat.txt" -e context-switches,cpu-migrations,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_pwrite64,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep \
		-p "$pid" -- sleep "${DURATION%s}" 2>/dev/null || true
	wait "$wpid"
	local wcpu
	wcpu=$(awk '{print ($1 + $2) * 1e6}' "$WORK/wrktime.txt")
	local u1 p1
	u1=$(cpu_ticks "$PID_upstream")
	p1=$(cpu_ticks "$pid")
	awk -v name="$name" -v c="$c" -v pcpu=$((p1 - p0)) -v ucpu=$((u1 - u0)) -v wcpu="$wcpu" -v tck="$TCK" '
	function us(v) {
		if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
		if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
		if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1e6 }
		return v + 0
	}
	FILENAME ~ /wrk/ && $1 == "50%" { p50 = us($2) }
	FILENAME ~ /wrk/ && $1 == "99%" { p99 = us($2) }
	FILENAME ~ /wrk/ && / requests in / { n = $1 }
	FILENAME ~ /wrk/ && /^Requests\/sec:/ { rps = $2 }
	FILENAME ~ /stat/ && /^[0-9]/ { split($0, f, ","); ev = f[3]; sub(/^syscalls:sys_enter_/, "", ev); cnt[ev] = f[1]; order[++k] = ev }
	END {
		if (n == 0) n = 1
		line = sprintf("%-5s c=%-4s rps=%-8.0f p50=%-7.0f p99=%-7.0f", name, c, rps, p50, p99)
		for (i = 1; i <= k; i++) {
			e = order[i]; s = e
			if (e == "context-switches") s = "cs"
			if (e == "cpu-migrations") s = "migr"
			line = line sprintf(" %s=%.2f", s, cnt[e] / n)
		}
		line = line sprintf(" cpu/call=%.1fus upstream=%.1fus wrk=%.1fus", pcpu * 1e6 / tck / n, ucpu * 1e6 / tck / n, wcpu / n)
		print line
	}' "$WORK/wrk.txt" "$WORK/stat.txt"
}

# warm-up
if [ "$WITH_BASE" = 1 ]; then ORDER=${PERCALL_ORDER:-bare base new new base bare}; else ORDER=${PERCALL_ORDER:-bare new new bare}; fi
for name in $(printf '%s\n' $ORDER | sort -u); do measure "$name" 32 >/dev/null; done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); path $TPATH; new=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +wt) ${PERCALL_NEW_ENV:-} ${PERCALL_NEW_ARGS:-}; base=${BASE:-same build} ${PERCALL_BASE_ENV:-} ${PERCALL_BASE_ARGS:-}; pin ${PERCALL_PIN:-none}"
for c in $CONNS; do
	for _ in $(seq "$ROUNDS"); do
		for name in $ORDER; do measure "$name" "$c"; done
	done
done
echo "# done $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
