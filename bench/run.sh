#!/usr/bin/env bash
# bench/run.sh: llm_router vs Caddy's reverse_proxy vs the mock upstream
# directly, on 127.0.0.1, in one bounded run (about 33 minutes).
#
# Builds bench/bin/{caddy,mockllm,loadgen}, then for every scenario starts a
# fresh mock (and, unless direct, a fresh Caddy so that VmHWM is that
# scenario's peak RSS), warms up, measures, records, and stops them. The
# features section compares llm_router with and without a feature (budget +
# client label, routing rules, response cache miss and hit) in interleaved
# pairs of runs. At the end it prints one markdown table and writes it to
# bench/results/latest.md (raw figures: bench/results/<stamp>.raw). See
# bench/README.md.
#
# Needs: go, wrk (Debian: apt-get install wrk), taskset (util-linux; only with
# PIN=1). Environment (defaults in brackets):
#   DUR        measured duration of the main scenarios [10s]
#   SHORT_DUR  measured duration of the 50 ms-upstream scenarios and of the
#              -c1 time-to-first-byte runs [5s]
#   WARMUP     warm-up before each measurement, same load [1s]
#   FILL_WARMUP  warm-up of the cache-miss runs, which must fill the cache
#              (CACHE_SIZE at 6,000-10,000 unique requests a second) [5s]
#   FEATURE_DUR  measured duration of each feature run [5s]
#   ROUNDS     pairs of runs of each feature comparison, in the order
#              A,B then B,A, alternately [8]
#   PAIR_ROUNDS  rounds of each reverse_proxy vs llm_router comparison under
#              wrk (0 ms and HTTPS upstream), in the same alternating order;
#              direct and the open-loop scenarios run once [4]
#   PAIR_DUR   measured duration of each of those rounds [5s]
#   STREAMS    concurrent streams of the open-streams scenario [5000]
#   PIN        1: Caddy on CPU $CADDY_CPU, the mock on $MOCK_CPU, wrk and
#              loadgen on $LOAD_CPU; 0: no pinning [1]
#   CADDY_CPU, MOCK_CPU, LOAD_CPU  [1, 0, 0]
#   LOADGEN_GOGC  GOGC of the Go load generator only [400]
#   METRICS    1: also enable Caddy's per-server HTTP metrics (`servers {
#              metrics }`) in both Caddy configs [0]
#   ONLY       a regular expression: run only the scenarios whose id
#              ("<upstream> <mode> <load> <target>", e.g. "0ms json wrk -c50
#              llm_router", "feature budget", "feature cache-hit", or
#              "streams llm_router") matches
#   STREAM_USAGE  router: in the reverse_proxy vs llm_router scenarios,
#              llm_router's stream clients do not ask for usage
#              (the router asks the provider and strips the usage chunk, as
#              in production); client: they ask for it, as direct's and
#              reverse_proxy's do, so that every client receives the same
#              events [router]
#   CACHE_SIZE max_size of the llm_router_cache config [8MB]
#   CADDY_BIN  a caddy binary to measure instead of building ./cmd/caddy
#              (e.g. an older commit's, to compare builds under one harness)
#   KEEP_TMP   1: keep the temporary directory (Caddyfiles, logs)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
BIN=$BENCH/bin
RESULTS=$BENCH/results

DUR=${DUR:-10s}
SHORT_DUR=${SHORT_DUR:-5s}
FEATURE_DUR=${FEATURE_DUR:-5s}
WARMUP=${WARMUP:-1s}
FILL_WARMUP=${FILL_WARMUP:-5s}
ROUNDS=${ROUNDS:-8}
PAIR_ROUNDS=${PAIR_ROUNDS:-4}
PAIR_DUR=${PAIR_DUR:-5s}
STREAMS=${STREAMS:-5000}
PIN=${PIN:-1}
CADDY_CPU=${CADDY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
MOCK_CPU=${MOCK_CPU:-$LOAD_CPU}
# The load generator is the measuring tool, not the system under test: less GC.
LOADGEN_GOGC=${LOADGEN_GOGC:-400}
METRICS=${METRICS:-0}
ONLY=${ONLY:-}
STREAM_USAGE=${STREAM_USAGE:-router}
if [[ $STREAM_USAGE != router && $STREAM_USAGE != client ]]; then
	echo "bench: STREAM_USAGE must be router or client, got '$STREAM_USAGE'" >&2
	exit 1
fi
for n in ROUNDS PAIR_ROUNDS; do
	if ! [[ ${!n} =~ ^[1-9][0-9]*$ ]]; then
		echo "bench: $n must be a positive integer, got '${!n}'" >&2
		exit 1
	fi
done

need=(go wrk)
[[ $PIN == 1 ]] && need+=(taskset)
for tool in "${need[@]}"; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "bench: $tool is required (Debian: apt-get install ${tool/taskset/util-linux})" >&2
		exit 1
	fi
done

# Every stream holds a client and an upstream connection in Caddy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 2 * STREAMS + 1000)); then
	echo "bench: ulimit -n is $(ulimit -n); $STREAMS streams need at least $((2 * STREAMS + 1000)) (raise the hard limit or lower STREAMS)" >&2
	exit 1
fi

# shellcheck source=scripts/lib.sh
source scripts/lib.sh # the working directory is the repository root
setup_tmp bench

# Command prefixes that pin a process to a CPU. (Arrays, not functions: a
# backgrounded function would run in a subshell and $! would not be the
# process itself.)
ON_LOAD=(env "GOGC=$LOADGEN_GOGC")
ON_MOCK=()
ON_CADDY=()
if [[ $PIN == 1 ]]; then
	ON_LOAD+=(taskset -c "$LOAD_CPU")
	ON_MOCK=(taskset -c "$MOCK_CPU")
	ON_CADDY=(taskset -c "$CADDY_CPU")
fi

# ---------------------------------------------------------------- build
START=$SECONDS
echo "==> building bench/bin/caddy, bench/bin/mockllm, bench/bin/loadgen"
mkdir -p "$BIN" "$RESULTS"
if [[ -n ${CADDY_BIN:-} ]]; then
	# another build under the same harness, e.g. an older commit's
	CADDY=$(realpath "$CADDY_BIN")
else
	go build -o "$BIN/caddy" ./cmd/caddy
	CADDY=$BIN/caddy
fi
go build -o "$BIN/mockllm" ./cmd/mockllm
(cd "$BENCH" && go build -o "$BIN/loadgen" ./loadgen)
LOADGEN=$BIN/loadgen
echo "    built in $((SECONDS - START)) s"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/$STAMP.raw
: >"$RAW"

# ---------------------------------------------------------------- bodies
# The same upstream work everywhere: every stream carries a usage chunk
# (10 chunks + usage). llm_router's clients do not ask for usage: the router
# adds stream_options.include_usage upstream and strips the usage chunk on
# the way back, as it does in production. direct and reverse_proxy pass the
# body through, so their clients ask for usage themselves.
PROMPT='You are a helpful assistant. Summarise the shipping policy for an order placed on Monday with express delivery to Lyon.'
printf '{"model":"simple_qa","messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"%s"}],"max_tokens":64}' \
	"$PROMPT" >"$TMP/json.body"
printf '{"model":"simple_qa","stream":true,"messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"%s"}],"max_tokens":64}' \
	"$PROMPT" >"$TMP/stream_router.body"
printf '{"model":"simple_qa","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a support agent."},{"role":"user","content":"%s"}],"max_tokens":64}' \
	"$PROMPT" >"$TMP/stream.body"
# STREAM_USAGE=client: llm_router's stream clients ask for usage too
cp "$TMP/stream.body" "$TMP/stream_client.body"
# The features section: the JSON body with "model":"auto" (no route named:
# the default route, or the routing rules, decide). The short question ends
# on simple_qa either way. The cache-miss runs send json.body through
# wrk/unique.lua, which makes every request's user message different.
sed 's/"model":"simple_qa"/"model":"auto"/' "$TMP/json.body" >"$TMP/json_auto.body"
# The static target's body: the mock's answer to json.body (344 bytes).
STATIC_ANSWER='{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":10,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":0}}}'

# ---------------------------------------------------------------- processes
# start_mock <latency> <chunk delay>: sets MOCK_ADDR
start_mock() {
	local log=$TMP/mock.log i tlsflag=()
	# MOCK_TLS=1: HTTPS (HTTP/2) with a fresh CA in $TMP/mock-ca.pem
	MOCK_SCHEME=http
	if [[ ${MOCK_TLS:-0} == 1 ]]; then
		tlsflag=(-tls-ca "$TMP/mock-ca.pem")
		MOCK_SCHEME=https
		rm -f "$TMP/mock-ca.pem"
	fi
	# emptied here, not only by the background job's redirection, which may
	# open the file after the loop below first reads it: the previous
	# mock's address then looked like this one's, and its Caddy proxied to
	# a closed port ("not ready", 502s to 127.0.0.1:<the old port>)
	: >"$log"
	"${ON_MOCK[@]}" "$BIN/mockllm" -listen 127.0.0.1:0 -latency "$1" -chunk-delay "$2" -chunks 10 "${tlsflag[@]}" >"$log" 2>&1 &
	MOCK_PID=$!
	MOCK_ADDR=""
	for ((i = 0; i < 100; i++)); do
		MOCK_ADDR=$(sed -n 's/^mockllm listening on //p' "$log" | head -n 1)
		[[ -n $MOCK_ADDR ]] && return 0
		kill -0 "$MOCK_PID" 2>/dev/null || break
		sleep 0.05
	done
	echo "bench: the mock did not start:" >&2
	cat "$log" >&2
	return 1
}

# The features' router config: a budget (keyed by a client header, with a
# client label) and a cache.
BUDGET_CONFIG="
		budget bench_daily {
			limit 1000000 per day
			key {http.request.header.X-Team} label
			downgrade simple_qa
		}
		budget_sync 5s
		client_label {http.request.header.X-Team}"
CACHE_CONFIG="
		cache {
			ttl 10m
			max_size ${CACHE_SIZE:-8MB}
		}"

# write_caddyfile <target> <port> <admin port> <file>
#   target: reverse_proxy, llm_router (the baseline), a feature variant of
#   it (llm_router_budget, llm_router_rules, llm_router_cache), or static
#   (Caddy's own respond with a stored answer: the ceiling of a cache hit)
write_caddyfile() {
	local site globals="" routes="route simple_qa deepseek-v3.2 gpt-4.1" extra=""
	case $1 in
	reverse_proxy | static) ;;
	llm_router) ;;
	llm_router_budget)
		# A budget that applies to every request and never reaches its
		# limit, keyed by a client header, and a client label. Its spend is
		# synced to a fresh file_system storage in $TMP.
		rm -rf "$TMP/storage-budget"
		globals="storage file_system $TMP/storage-budget"
		extra=$BUDGET_CONFIG
		;;
	llm_router_rules | llm_router_all)
		# example.Caddyfile's rules, on the bench's two models.
		routes="route complex_reasoning gpt-4.1 {
			when has_tools || has_images
			when messages > 8 || prompt_chars > 6000
			when \`last_user_chars > 400 || contains_any(last_user, [\"compare\", \"difference\", \"why\", \"explain\", \"recommend\", \"so sánh\", \"khác nhau\", \"tại sao\", \"giải thích\", \"tư vấn\"])\`
		}
		route simple_qa deepseek-v3.2 gpt-4.1 {
			when last_user_chars <= 400
		}"
		if [[ $1 == llm_router_all ]]; then
			# every cost feature at once: the rules above, the budget and
			# client label, and the cache (on its miss path: the features
			# section sends it unique questions)
			rm -rf "$TMP/storage-budget"
			globals="storage file_system $TMP/storage-budget"
			extra=$BUDGET_CONFIG$CACHE_CONFIG
		fi
		;;
	llm_router_hedge)
		# hedging after 100 ms (the hedging scenario's slow deployment
		# takes 1 s for a tenth of its first bytes)
		extra="
		failover {
			hedge_after 100ms
		}"
		;;
	llm_router_hedge_idle)
		# hedging configured, never triggered (the mock answers at once):
		# what the feature costs a request that is not hedged
		extra="
		failover {
			hedge_after 10s
		}"
		;;
	llm_router_cache)
		# 8MB: the cache-miss warm-up (FILL_WARMUP at 6,000-10,000 unique
		# requests a second, ~500 bytes stored each) fills it, so that the
		# measured misses are those of a full cache (feature_run checks).
		# A cache still filling also pays for the heap growing (fresh
		# pages) on every store.
		extra=$CACHE_CONFIG
		;;
	*)
		echo "bench: unknown target $1" >&2
		return 1
		;;
	esac
	# an HTTPS mock: both proxies trust its CA through Caddy's transport
	local transport="" provider_transport=""
	if [[ ${MOCK_SCHEME:-http} == https ]]; then
		transport=" {
		transport http {
			tls_trust_pool file $TMP/mock-ca.pem
		}
	}"
		provider_transport="
			transport http {
				tls_trust_pool file $TMP/mock-ca.pem
			}"
	fi
	if [[ $1 == static ]]; then
		# what the mock answers json.body, as Caddy serves a fixed body
		site="header Content-Type application/json
	respond \`$STATIC_ANSWER\` 200"
	elif [[ $1 == reverse_proxy ]]; then
		site="reverse_proxy ${MOCK_SCHEME:-http}://$MOCK_ADDR$transport"
	else
		# One provider, two models, a default route; metrics are the module's
		# own (always registered in Caddy's registry).
		site="llm_router /v1/* {
		provider mock {
			base_url ${MOCK_SCHEME:-http}://$MOCK_ADDR/v1
			api_key sk-bench-upstream-0123456789$provider_transport
		}
		model deepseek-v3.2
		model gpt-4.1
		$routes
		default_route simple_qa
		health_check {
			interval off
		}$extra
	}"
	fi
	if [[ $METRICS == 1 ]]; then
		globals="servers {
		metrics
	}${globals:+
	$globals}"
	fi
	cat >"$4" <<EOF
{
	admin 127.0.0.1:$3
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	log {
		level WARN
	}
	$globals
}

http://127.0.0.1:$2 {
	$site
}
EOF
}

# start_caddy <target>: sets CADDY_PID, URL and ADMIN (the admin API's base URL)
start_caddy() {
	local ports port admin
	ports=$("$LOADGEN" freeport -n 2)
	port=$(sed -n 1p <<<"$ports")
	admin=$(sed -n 2p <<<"$ports")
	write_caddyfile "$1" "$port" "$admin" "$TMP/Caddyfile" || return 1
	# Caddy's config and data directories (autosave, storage) stay in $TMP.
	"${ON_CADDY[@]}" env XDG_CONFIG_HOME="$TMP/xdg-config" XDG_DATA_HOME="$TMP/xdg-data" \
		"$CADDY" run --config "$TMP/Caddyfile" --adapter caddyfile >"$TMP/caddy.log" 2>&1 &
	CADDY_PID=$!
	URL=http://127.0.0.1:$port/v1/chat/completions
	ADMIN=http://127.0.0.1:$admin
}

stop_all() {
	stop "$CADDY_PID"
	CADDY_PID=""
	stop "$MOCK_PID"
	MOCK_PID=""
}

cpu_ms() { # cpu_ms <pid>: user+system CPU time in ms
	local ticks
	ticks=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
	echo $((ticks * 1000 / $(getconf CLK_TCK)))
}

hwm_kb() {
	awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

FAILED=()
fail() {
	echo "    FAILED: $*" >&2
	FAILED+=("$*")
	for f in caddy.log mock.log wrk.out load.err stats.json; do
		if [[ -s $TMP/$f ]]; then
			echo "    --- $f (last lines)" >&2
			tail -n 15 "$TMP/$f" | sed 's/^/    /' >&2
		fi
	done
}

selected() { [[ -z $ONLY || $1 =~ $ONLY ]]; }

# run_wrk <conns> <duration> <body file> <url> [<script>]: prints the
# BENCH_JSON object. The script is one of bench/wrk (default post.lua); the
# caller's WRK_HEADERS ("Name: value" lines) are added to every request, and
# every run gets its own BENCH_SEED (unique.lua's bodies differ across runs).
run_wrk() {
	BENCH_BODY=$3 BENCH_HEADERS=${WRK_HEADERS:-} BENCH_SEED=$(date +%s%N) \
		"${ON_LOAD[@]}" wrk -t1 -c"$1" -d"$2" --timeout 10s -s "$BENCH/wrk/${5:-post.lua}" "$4" >"$TMP/wrk.out" 2>&1 || return 1
	sed -n 's/^BENCH_JSON //p' "$TMP/wrk.out" | grep . || return 1
}

field() { # field <json> <name>: a number from a flat JSON object
	grep -o "\"$2\":[-0-9.e+]*" <<<"$1" | head -n 1 | cut -d: -f2
}

summary() { # summary <json>: one line of the main figures
	printf '    %.0f req/s  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  errors %s\n' \
		"$(field "$1" rps)" "$(field "$1" p50_ms)" "$(field "$1" p90_ms)" "$(field "$1" p99_ms)" "$(field "$1" errors)"
}

# scenario <upstream latency> <mode json|stream> <load> <target> [<round>]
#   load: "wrk -c<N>" (closed loop) or "open <R>/s" (vegeta, open loop)
#   round: set by pair, which runs PAIR_DUR each round
scenario() {
	local upstream=$1 mode=$2 load=$3 target=$4 round=${5:-0} dur=$DUR
	local id="$upstream $mode $load $target"
	selected "$id" || return 0
	[[ $upstream != 0ms && $upstream != https ]] && dur=$SHORT_DUR
	((round > 0)) && dur=$PAIR_DUR
	echo "==> $id ($dur$( ((round > 0)) && echo ", round $round/$PAIR_ROUNDS"))"
	local body=$TMP/$mode.body streamflag=()
	[[ $mode == stream ]] && streamflag=(-stream)
	[[ $mode == stream && $target == llm_router ]] && body=$TMP/stream_$STREAM_USAGE.body
	rm -f "$TMP/caddy.log" "$TMP/wrk.out" "$TMP/load.err"

	local latency=$upstream
	[[ $upstream == https ]] && latency=0ms
	MOCK_TLS=0
	[[ $upstream == https ]] && MOCK_TLS=1
	start_mock "$latency" 0 || { fail "$id: mock"; return 0; }
	MOCK_TLS=0
	URL=http://$MOCK_ADDR/v1/chat/completions
	[[ $target != direct ]] && start_caddy "$target"
	if ! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$body" "${streamflag[@]}" -wait 15s 2>"$TMP/load.err"; then
		fail "$id: not ready"
		stop_all
		return 0
	fi

	local pid=${CADDY_PID:-$MOCK_PID} main ttfb=null cpu0 cpu1 c rate
	if [[ $load == wrk* ]]; then
		c=${load#wrk -c}
		run_wrk "$c" "$WARMUP" "$body" "$URL" >/dev/null || { fail "$id: wrk warm-up"; stop_all; return 0; }
		cpu0=$(cpu_ms "$pid")
		main=$(run_wrk "$c" "$dur" "$body" "$URL") || { fail "$id: wrk"; stop_all; return 0; }
		cpu1=$(cpu_ms "$pid")
		# wrk cannot see the first event of a stream: a short loadgen run
		# at the same concurrency records the time to first byte.
		if [[ $mode == stream && $c == 1 ]]; then
			ttfb=$("${ON_LOAD[@]}" "$LOADGEN" closed -url "$URL" -body "$body" -stream -c 1 -d "$SHORT_DUR" 2>"$TMP/load.err") ||
				{ fail "$id: loadgen closed"; stop_all; return 0; }
		fi
	else
		rate=${load#open }
		rate=${rate%/s}
		"${ON_LOAD[@]}" "$LOADGEN" open -url "$URL" -body "$body" "${streamflag[@]}" -rate "$rate" -d "$WARMUP" -timeout 10s >/dev/null 2>"$TMP/load.err" ||
			{ fail "$id: vegeta warm-up"; stop_all; return 0; }
		cpu0=$(cpu_ms "$pid")
		main=$("${ON_LOAD[@]}" "$LOADGEN" open -url "$URL" -body "$body" "${streamflag[@]}" -rate "$rate" -d "$dur" -timeout 10s 2>"$TMP/load.err") ||
			{ fail "$id: vegeta"; stop_all; return 0; }
		cpu1=$(cpu_ms "$pid")
	fi

	local hwm=0 cpu=0
	if [[ -n $CADDY_PID ]]; then
		if ! kill -0 "$CADDY_PID" 2>/dev/null; then
			fail "$id: caddy exited"
			stop_all
			return 0
		fi
		hwm=$(hwm_kb "$CADDY_PID")
		cpu=$((cpu1 - cpu0))
	fi
	stop_all
	printf '{"kind":"scenario","upstream":"%s","mode":"%s","load":"%s","target":"%s","round":%d,"main":%s,"ttfb":%s,"hwm_kb":%s,"cpu_ms":%s}\n' \
		"$upstream" "$mode" "$load" "$target" "$round" "$main" "$ttfb" "$hwm" "$cpu" >>"$RAW"
	summary "$main"
}

# pair <upstream latency> <mode> <load>: reverse_proxy and llm_router in
# PAIR_ROUNDS rounds, next to each other (reverse_proxy first in odd rounds,
# llm_router in even ones), so that the machine's drift, which one run of
# each would read as a difference between them, cancels out of their ratio.
pair() {
	local round
	for ((round = 1; round <= PAIR_ROUNDS; round++)); do
		if ((round % 2)); then
			scenario "$1" "$2" "$3" reverse_proxy "$round"
			scenario "$1" "$2" "$3" llm_router "$round"
		else
			scenario "$1" "$2" "$3" llm_router "$round"
			scenario "$1" "$2" "$3" reverse_proxy "$round"
		fi
	done
}

# streams <target>: STREAMS concurrent streams of ~11 s each (mock
# -chunk-delay 1s, 10 chunks), Caddy's RSS while all are open
streams() {
	local target=$1 id="streams $1"
	selected "$id" || return 0
	echo "==> $id ($STREAMS concurrent streams)"
	rm -f "$TMP/caddy.log" "$TMP/load.err"
	start_mock 0 1s || { fail "$id: mock"; return 0; }
	start_caddy "$target"
	# readiness with a non-streaming request (chunk-delay only slows streams)
	if ! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$TMP/json.body" -wait 15s 2>"$TMP/load.err"; then
		fail "$id: not ready"
		stop_all
		return 0
	fi
	sleep 0.5 # let the check's garbage settle before the idle RSS is read
	local out sbody=$TMP/stream.body
	[[ $target == llm_router ]] && sbody=$TMP/stream_router.body
	out=$("${ON_LOAD[@]}" "$LOADGEN" streams -url "$URL" -body "$sbody" -stream -timeout 60s \
		-n "$STREAMS" -ramp 2s -pid "$CADDY_PID" 2>"$TMP/load.err") || { fail "$id: loadgen streams"; stop_all; return 0; }
	if ! kill -0 "$CADDY_PID" 2>/dev/null; then
		fail "$id: caddy exited"
		stop_all
		return 0
	fi
	stop_all
	printf '{"kind":"streams","target":"%s","streams":%s}\n' "$target" "$out" >>"$RAW"
	echo "    $out"
	if ! grep -q '"all_open":true' <<<"$out"; then
		fail "$id: not all streams were open at once"
	fi
}

# followers: rounds of 5 identical streams at once on the cached router, the
# mock spacing events 200 ms apart: one leads, four follow; how late each
# follower's first event is against its leader's.
followers() {
	local id="followers llm_router_cache"
	selected "$id" || return 0
	echo "==> $id (5 identical streams at once, 20 rounds)"
	rm -f "$TMP/caddy.log" "$TMP/load.err"
	start_mock 0 200ms || { fail "$id: mock"; return 0; }
	start_caddy llm_router_cache
	if ! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$TMP/json.body" -wait 15s 2>"$TMP/load.err"; then
		fail "$id: not ready"
		stop_all
		return 0
	fi
	local out
	out=$("${ON_LOAD[@]}" "$LOADGEN" followers -url "$URL" -body "$TMP/stream_router.body" -n 5 -rounds 20 -timeout 30s \
		2>"$TMP/load.err") || { fail "$id: loadgen followers"; stop_all; return 0; }
	stop_all
	printf '{"kind":"followers","target":"llm_router_cache","followers":%s}\n' "$out" >>"$RAW"
	echo "    $out"
	if ! grep -q '"leaders":20,' <<<"$out"; then
		fail "$id: not one leader a round (one upstream request for five identical streams)"
	fi
}

# mock_requests <control URL>: the requests the mock has received, all
# models together ({"model": count, ...}: the counts follow the colons)
mock_requests() {
	local sum
	sum=$(curl -fsS "$1/requests" | grep -o ':[0-9]*' | tr -d : | paste -sd+ -)
	echo $((${sum:-0}))
}

# hedging <off|on>: streams at 10 connections on a route whose first
# deployment (deepseek-v3.2) takes 1 s for a tenth of its first bytes and
# 20 ms otherwise, the second (gpt-4.1) 20 ms: time to first byte with
# hedging off and on (hedge_after 100ms), and the upstream requests it
# took.
hedging() {
	local variant=$1 id="hedging $1" target=llm_router
	selected "$id" || return 0
	[[ $variant == on ]] && target=llm_router_hedge
	echo "==> $id ($DUR, 10 connections, streams)"
	rm -f "$TMP/caddy.log" "$TMP/load.err"
	start_mock 0 0 || { fail "$id: mock"; return 0; }
	local ctl=http://$MOCK_ADDR/_mock
	curl -fsS -X POST "$ctl/behavior?model=deepseek-v3.2" -d '{"latency":"20ms","tail_share":0.1,"tail_latency":"1s"}' &&
		curl -fsS -X POST "$ctl/behavior?model=gpt-4.1" -d '{"latency":"20ms"}' || { fail "$id: mock behavior"; stop_all; return 0; }
	start_caddy "$target"
	if ! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$TMP/stream_router.body" -stream -wait 15s 2>"$TMP/load.err"; then
		fail "$id: not ready"
		stop_all
		return 0
	fi
	local before after main
	before=$(mock_requests "$ctl")
	main=$("${ON_LOAD[@]}" "$LOADGEN" closed -url "$URL" -body "$TMP/stream_router.body" -stream -c 10 -d "$DUR" 2>"$TMP/load.err") ||
		{ fail "$id: loadgen closed"; stop_all; return 0; }
	after=$(mock_requests "$ctl")
	stop_all
	printf '{"kind":"hedging","variant":"%s","target":"%s","main":%s,"upstream_requests":%s}\n' \
		"$variant" "$target" "$main" "$((after - before))" >>"$RAW"
	summary "$main"
	echo "    upstream requests $((after - before))"
}

# feature_run <feature> <variant a|b> <round> <target> <body file> <wrk script>:
# one run of a feature comparison (JSON, wrk -c50, upstream 0 ms): fresh mock
# and Caddy, readiness (and the feature's own checks), warm-up, DUR measured.
feature_run() {
	local feature=$1 variant=$2 round=$3 target=$4 body=$5 script=$6
	local id="feature $feature $variant $target (round $round/$ROUNDS)"
	# The same client header in every run: only the config differs.
	local WRK_HEADERS="X-Team: bench-team" hdr=(-header "X-Team: bench-team")
	echo "==> $id ($FEATURE_DUR, ${script%.lua} ${body##*/})"
	rm -f "$TMP/caddy.log" "$TMP/wrk.out" "$TMP/load.err" "$TMP/stats.json"

	start_mock 0ms 0 || { fail "$id: mock"; return 0; }
	start_caddy "$target" || { fail "$id: caddy config"; stop_all; return 0; }
	# What the first answer must show: the rules runs end on simple_qa
	# (default route or rule), a cache starts cold.
	local expect=() streamflag=()
	[[ $body == *stream* ]] && streamflag=(-stream)
	case $feature/$variant in
	rules/* | all-costs/a) expect=(-expect-header "X-LLM-Route: simple_qa") ;;
	all-costs/b) expect=(-expect-header "X-LLM-Route: simple_qa" -expect-header "X-LLM-Cache: miss") ;;
	cache-miss/b | cache-hit/b) expect=(-expect-header "X-LLM-Cache: miss") ;;
	esac
	if ! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$body" "${streamflag[@]}" "${hdr[@]}" "${expect[@]}" -wait 15s 2>"$TMP/load.err"; then
		fail "$id: not ready"
		stop_all
		return 0
	fi
	# cache-hit: the same question again is a hit, and so is every request
	# of the warm-up and the measured run (checked after it).
	if [[ $feature/$variant == cache-hit/b ]] &&
		! "${ON_LOAD[@]}" "$LOADGEN" check -url "$URL" -body "$body" "${hdr[@]}" -expect-header "X-LLM-Cache: hit" -wait 0s 2>"$TMP/load.err"; then
		fail "$id: the second request was not a cache hit"
		stop_all
		return 0
	fi

	local main cpu0 cpu1 warmup=$WARMUP
	# cache-miss: the misses to measure are those of a full cache, which
	# evicts as it stores (the state a cache spends its life in), so both
	# variants warm up long enough to fill it, and B checks that it did.
	[[ $feature == cache-miss || $feature == all-costs ]] && warmup=$FILL_WARMUP
	run_wrk 50 "$warmup" "$body" "$URL" "$script" >/dev/null || { fail "$id: wrk warm-up"; stop_all; return 0; }
	if [[ $feature/$variant == cache-miss/b ]]; then
		local stats bytes max
		stats=$("$LOADGEN" get -url "$ADMIN/llm_router/stats" 2>"$TMP/load.err") || { fail "$id: GET /llm_router/stats"; stop_all; return 0; }
		stats=$(tr -d ' \t\n' <<<"$stats") # indented JSON, for field
		bytes=$(field "$stats" bytes) max=$(field "$stats" max_bytes)
		if [[ -z $bytes || -z $max ]] || ((bytes * 10 < max * 9)); then
			fail "$id: the cache was not full after the $warmup warm-up ($bytes of $max bytes): raise FILL_WARMUP"
			stop_all
			return 0
		fi
	fi
	cpu0=$(cpu_ms "$CADDY_PID")
	main=$(run_wrk 50 "$FEATURE_DUR" "$body" "$URL" "$script") || { fail "$id: wrk"; stop_all; return 0; }
	cpu1=$(cpu_ms "$CADDY_PID")
	if ! kill -0 "$CADDY_PID" 2>/dev/null; then
		fail "$id: caddy exited"
		stop_all
		return 0
	fi
	local hwm
	hwm=$(hwm_kb "$CADDY_PID")

	# The feature did its work: the router's stats (GET /llm_router/stats)
	# show the budget's key and the client label, no hit among unique
	# bodies, no miss but the first among repeated ones.
	local want="" why=""
	case $feature/$variant in
	budget/b | budget-stream/b | all-costs/b) want='"bench-team"' why="the budget and client label did not see X-Team: bench-team" ;;
	cache-miss/b) want='"hits":[[:space:]]*0[^0-9.]' why="unique bodies were answered from the cache" ;;
	cache-hit/b) want='"misses":[[:space:]]*1[^0-9.]' why="requests after the first were not all cache hits" ;;
	esac
	if [[ -n $want ]]; then
		if ! "$LOADGEN" get -url "$ADMIN/llm_router/stats" >"$TMP/stats.json" 2>"$TMP/load.err"; then
			fail "$id: GET /llm_router/stats"
			stop_all
			return 0
		fi
		if ! grep -Eq "$want" "$TMP/stats.json"; then
			fail "$id: $why (stats: no match for $want)"
			stop_all
			return 0
		fi
	fi
	stop_all
	printf '{"kind":"feature","feature":"%s","variant":"%s","target":"%s","body":"%s","script":"%s","round":%d,"main":%s,"hwm_kb":%s,"cpu_ms":%s}\n' \
		"$feature" "$variant" "$target" "${body##*/}" "$script" "$round" "$main" "$hwm" "$((cpu1 - cpu0))" >>"$RAW"
	summary "$main"
}

# feature <name> <target A> <target B> <body file> <wrk script>: ROUNDS
# pairs of adjacent runs, A,B in odd rounds and B,A in even ones, so that a
# drift of the machine's speed during the section favours neither side (the
# table takes the geometric mean of the rounds' B/A).
feature() {
	local name=$1 a=$2 b=$3 body=$4 script=$5 round
	selected "feature $name" || return 0
	for ((round = 1; round <= ROUNDS; round++)); do
		if ((round % 2 == 1)); then
			feature_run "$name" a "$round" "$a" "$body" "$script"
			feature_run "$name" b "$round" "$b" "$body" "$script"
		else
			feature_run "$name" b "$round" "$b" "$body" "$script"
			feature_run "$name" a "$round" "$a" "$body" "$script"
		fi
	done
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- . 2>/dev/null | head -n 1) ]]; then
	COMMIT="$COMMIT (working tree modified)"
fi
PINNING="none"
[[ $PIN == 1 ]] && PINNING="Caddy on CPU $CADDY_CPU, mock on CPU $MOCK_CPU, wrk and loadgen on CPU $LOAD_CPU"
HOST="$(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)"
printf '{"kind":"meta","meta":{"started":"%s","host":"%s","commit":"%s","pinning":"%s","loadavg_start":"%s","note":"durations %s main, %s a reverse_proxy vs llm_router round under wrk (%s rounds), %s at 50 ms upstream and for -c1 TTFB, %s a feature run (%s rounds), warm-up %s; metrics: llm_router module metrics always on, Caddy per-server metrics %s; streams: %s"}}\n' \
	"$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$HOST" "$COMMIT" "$PINNING" "$(loadavg)" \
	"$DUR" "$PAIR_DUR" "$PAIR_ROUNDS" "$SHORT_DUR" "$FEATURE_DUR" "$ROUNDS" "$WARMUP" "$([[ $METRICS == 1 ]] && echo on || echo off)" \
	"$([[ $STREAM_USAGE == client ]] && echo "every client asks for usage and receives the usage chunk" ||
		echo "llm_router's clients do not ask for usage (it asks the provider and strips the chunk), the others' do")" >>"$RAW"

# ---------------------------------------------------------------- scenarios
TARGETS=(direct reverse_proxy llm_router)
for mode in json stream; do
	for load in "wrk -c1" "wrk -c50"; do
		scenario 0ms "$mode" "$load" direct
		pair 0ms "$mode" "$load"
	done
	for load in "open 500/s" "open 2000/s"; do
		for target in "${TARGETS[@]}"; do
			scenario 0ms "$mode" "$load" "$target"
		done
	done
done
# A realistic upstream: what the proxies add to 50 ms of model latency.
for mode in json stream; do
	for load in "wrk -c1" "open 500/s"; do
		for target in "${TARGETS[@]}"; do
			scenario 50ms "$mode" "$load" "$target"
		done
	done
done
# An HTTPS upstream (HTTP/2, a private CA), both proxies through Caddy's
# HTTP transport with the same settings: what TLS and HTTP/2 to a real
# provider cost each.
for mode in json stream; do
	for load in "wrk -c1" "wrk -c50"; do
		pair https "$mode" "$load"
	done
done
# Features: the cost of each against the same config without it (JSON,
# wrk -c50, upstream 0 ms).
feature budget llm_router llm_router_budget "$TMP/json.body" post.lua
feature budget-stream llm_router llm_router_budget "$TMP/stream_router.body" post.lua
feature rules llm_router llm_router_rules "$TMP/json_auto.body" post.lua
feature cache-miss llm_router llm_router_cache "$TMP/json.body" unique.lua
feature all-costs llm_router llm_router_all "$TMP/json_auto.body" unique.lua
feature cache-hit reverse_proxy llm_router_cache "$TMP/json.body" post.lua
# The ceiling of a hit: Caddy answering the same body with no handler work.
feature cache-hit-ceiling reverse_proxy static "$TMP/json.body" post.lua
followers
hedging off
hedging on
feature hedge-idle llm_router llm_router_hedge_idle "$TMP/json.body" post.lua
feature hedge-idle-stream llm_router llm_router_hedge_idle "$TMP/stream_router.body" post.lua
streams llm_router
streams reverse_proxy

printf '{"kind":"meta","meta":{"loadavg_end":"%s","duration":"%d s (build included)"}}\n' "$(loadavg)" "$((SECONDS - START))" >>"$RAW"

# ---------------------------------------------------------------- report
echo
"$LOADGEN" table -in "$RAW" -out "$RESULTS/latest.md"
echo "bench: raw figures in ${RAW#"$ROOT"/}, table in bench/results/latest.md ($((SECONDS - START)) s)"
if ((${#FAILED[@]} > 0)); then
	echo "bench: ${#FAILED[@]} scenario(s) failed:" >&2
	printf '    %s\n' "${FAILED[@]}" >&2
	exit 1
fi
