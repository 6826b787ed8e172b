# bench/report.awk: the tables of bench/run.sh's results file, from its
# results.tsv (one line per measured run: conns, target, req/s, p50 µs,
# p99 µs, direct req/s, direct p50 µs, direct p99 µs, direct errors,
# errors, round). Every ratio is taken within one round (the target and
# the proxies it is compared with measured in the same minutes), then
# summarized over the rounds as the median and, with more than one round,
# its range.
#
#   awk -F'\t' -v part=table|targets -v conns="1 32 128" -f bench/report.awk results.tsv

{
	c = $1; n = $2; r = $11
	key = c SUBSEP n SUBSEP r
	rps[key] = $3; p50[key] = $4; p99[key] = $5; drps[key] = $6; dp50[key] = $7; err[key] = $10
	if (!((c, n) in seen)) { seen[c, n] = 1; order[++k] = c SUBSEP n }
	if (!(r in rounds)) { rounds[r] = 1; rl[++nr] = r }
}

function norm(c, n, r) { return rps[c, n, r] / drps[c, n, r] }
function has(c, n) { return (c, n) in seen }

# The list of one figure of target n at c over the rounds, in vals[1..m].
function collect(what, c, n,    i, r, m) {
	m = 0
	for (i = 1; i <= nr; i++) {
		r = rl[i]
		if (!((c, n, r) in rps)) continue
		if (what == "rps") vals[++m] = rps[c, n, r]
		else if (what == "p50") vals[++m] = p50[c, n, r]
		else if (what == "p99") vals[++m] = p99[c, n, r]
		else if (what == "drps") vals[++m] = drps[c, n, r]
		else if (what == "dp50") vals[++m] = dp50[c, n, r]
		else if (what == "add") vals[++m] = p50[c, n, r] - dp50[c, n, r]
		else if (what == "norm") vals[++m] = norm(c, n, r)
		else if (what == "err") vals[++m] = err[c, n, r]
		else if (what == "vsnginx" && (c, "nginx", r) in rps) vals[++m] = norm(c, n, r) / norm(c, "nginx", r)
		else if (what == "vsbare" && (c, "bare", r) in rps) vals[++m] = norm(c, n, r) / norm(c, "bare", r)
		else if (what == "p99vsnginx" && (c, "nginx", r) in rps) vals[++m] = p99[c, n, r] / p99[c, "nginx", r]
		else if (what == "addvsbare" && (c, "bare", r) in rps) vals[++m] = (p50[c, n, r] - dp50[c, n, r]) - (p50[c, "bare", r] - dp50[c, "bare", r])
	}
	return m
}

function sortvals(m,    i, j, v) {
	for (i = 2; i <= m; i++) {
		v = vals[i]
		for (j = i - 1; j >= 1 && vals[j] > v; j--) vals[j + 1] = vals[j]
		vals[j + 1] = v
	}
}

# median of what over the rounds; lo and hi are set to the range.
function med(what, c, n,    m) {
	m = collect(what, c, n)
	if (m == 0) { lo = hi = 0; return 0 }
	sortvals(m)
	lo = vals[1]; hi = vals[m]
	return m % 2 ? vals[(m + 1) / 2] : (vals[m / 2] + vals[m / 2 + 1]) / 2
}

# fmt formats a median with its range when there is more than one round.
function fmt(f, what, c, n,    v) {
	v = med(what, c, n)
	if (nr > 1) return sprintf(f " (" f "–" f ")", v, lo, hi)
	return sprintf(f, v)
}

function verdict(ok) { return ok ? "met" : "**missed**" }

END {
	if (part == "table") {
		for (i = 1; i <= k; i++) {
			split(order[i], a, SUBSEP); c = a[1]; n = a[2]
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, n,
				fmt("%d", "rps", c, n), fmt("%.0f", "p50", c, n), fmt("%.0f", "p99", c, n),
				fmt("%d", "drps", c, n), fmt("%.0f", "dp50", c, n), fmt("%.2f", "norm", c, n),
				fmt("%+.0f", "add", c, n), fmt("%.2f", "vsnginx", c, n), fmt("%.2f", "vsbare", c, n), fmt("%d", "err", c, n)
		}
		exit
	}
	if (part != "targets") exit
	if (nr > 1) printf "Each figure: the median of the %d rounds' ratios (each ratio within one round), and their range.\n\n", nr
	if (has(1, "toolgate") && has(1, "bare")) {
		d = med("addvsbare", 1, "toolgate"); dlo = lo; dhi = hi
		printf "- c=1: toolgate added p50 ≤ bare proxy added p50 + 20 µs: toolgate %s µs, bare %s µs; difference %+.0f µs%s → %s\n",
			fmt("%+.0f", "add", 1, "toolgate"), fmt("%+.0f", "add", 1, "bare"), d,
			(nr > 1 ? sprintf(" (%+.0f to %+.0f)", dlo, dhi) : ""), verdict(d <= 20)
	}
	nc = split(conns, cl, " ")
	for (i = 1; i <= nc; i++) {
		c = cl[i]
		if (c == 1 || !has(c, "toolgate")) continue
		v = med("vsnginx", c, "toolgate")
		printf "- c=%s: toolgate ≥ 1.0× nginx + limit_req throughput: %s× → %s\n", c, fmt("%.2f", "vsnginx", c, "toolgate"), verdict(v >= 1)
		v = med("vsbare", c, "toolgate")
		printf "- c=%s: toolgate ≥ 0.9× bare fasthttp proxy throughput: %s× → %s\n", c, fmt("%.2f", "vsbare", c, "toolgate"), verdict(v >= 0.9)
		if (has(c, "bare+ledger"))
			printf "  - the floor at c=%s: bare+ledger (no policy, only the record journaled before the answer) %s× bare, %s× nginx\n",
				c, fmt("%.2f", "vsbare", c, "bare+ledger"), fmt("%.2f", "vsnginx", c, "bare+ledger")
	}
	split("toolgate toolgate-403 toolgate-402", paths, " ")
	for (i = 1; i <= nc; i++) {
		c = cl[i]
		if (!has(c, "nginx")) continue
		line = ""; ok = 1
		for (j = 1; j <= 3; j++) {
			if (!has(c, paths[j])) continue
			v = med("p99vsnginx", c, paths[j])
			line = line sprintf("%s%s %s ms = %s×", line == "" ? "" : "; ", paths[j], fmtms("p99", c, paths[j]), fmt("%.1f", "p99vsnginx", c, paths[j]))
			if (v > 2) ok = 0
		}
		printf "- c=%s: p99 ≤ 2× nginx's (nginx %s ms, bare %s ms): %s → %s\n", c, fmtms("p99", c, "nginx"), fmtms("p99", c, "bare"), line, verdict(ok)
	}
}

# fmtms is fmt of a figure in µs shown in ms.
function fmtms(what, c, n,    v) {
	v = med(what, c, n)
	if (nr > 1) return sprintf("%.1f (%.1f–%.1f)", v / 1000, lo / 1000, hi / 1000)
	return sprintf("%.1f", v / 1000)
}
