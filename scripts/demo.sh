#!/usr/bin/env bash
# demo.sh: caddy-llm-router end to end, with no API key and no network.
#
# Builds ./caddy (Caddy with llm_router) and ./mockllm (a mock
# OpenAI-compatible upstream), starts the mock and Caddy on free 127.0.0.1
# ports, and sends requests through the gateway: one per route, a streaming
# one, an unknown model, a request without the client key, and a failover
# (the mock is told to fail deepseek-v3.2 with 503). For each it prints the
# HTTP status, the X-LLM-* headers and the answer, and it exits non-zero if
# anything differs from what is expected.
#
# Needs bash, curl and go. Environment:
#   BIN_DIR   where to build the binaries (default: the repository root)
#   KEEP_TMP  set to 1 to keep the temporary directory (Caddyfile, logs)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BIN_DIR=${BIN_DIR:-$ROOT}

for tool in go curl; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "demo: $tool is required (Debian: apt-get install $tool)" >&2
		exit 1
	fi
done

# shellcheck source=scripts/lib.sh
source scripts/lib.sh # the working directory is the repository root
setup_tmp demo

# ---------------------------------------------------------------- build
echo "==> building $BIN_DIR/caddy and $BIN_DIR/mockllm"
mkdir -p "$BIN_DIR"
go build -o "$BIN_DIR/caddy" ./cmd/caddy
go build -o "$BIN_DIR/mockllm" ./cmd/mockllm
START=$SECONDS

# ---------------------------------------------------------------- helpers
FAILURES=0
fail() {
	echo "    FAIL: $*"
	FAILURES=$((FAILURES + 1))
}

# port_in_use <port>: something accepts connections on 127.0.0.1:<port>
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port <var>: sets <var> to a port nothing listens on, in 20000-49999,
# and not one this demo already took
TAKEN_PORTS=""
free_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 30000))
		[[ " $TAKEN_PORTS " == *" $p "* ]] && continue
		if ! port_in_use "$p"; then
			TAKEN_PORTS="$TAKEN_PORTS $p"
			printf -v "$1" '%s' "$p"
			return 0
		fi
	done
	echo "demo: no free port found" >&2
	return 1
}

# header <file> <name>: the value of a response header (last response)
header() {
	local v
	v=$(tr -d '\r' <"$1" | grep -i "^$2:" | tail -n 1 | cut -d: -f2- || true)
	v=${v# }
	echo "$v"
}

# answer_text <file>: the message content of a chat completion, or the
# concatenated deltas of a stream, or the error message
answer_text() {
	local f=$1
	if grep -q '^data:' "$f"; then
		grep '^data:' "$f" | grep -o '"content":"[^"]*"' | sed 's/^"content":"//; s/"$//' | tr -d '\n' || true
	elif grep -q '"error"' "$f"; then
		grep -o '"message":"[^"]*"' "$f" | head -n 1 | sed 's/^"message":"//; s/"$//' || true
	else
		grep -o '"content":"[^"]*"' "$f" | head -n 1 | sed 's/^"content":"//; s/"$//' || true
	fi
}

REQ=0
# ask <title> <body> [curl args...]: POST a chat completion, print what came
# back; sets STATUS, MODEL, PROVIDER, ROUTE, ATTEMPTS, TEXT, HDRS, BODY
ask() {
	local title=$1 body=$2
	shift 2
	REQ=$((REQ + 1))
	HDRS="$TMP/resp$REQ.headers"
	BODY="$TMP/resp$REQ.body"
	echo
	echo "==> $title"
	echo "    POST /v1/chat/completions $body"
	STATUS=$(curl -sS --max-time 5 -o "$BODY" -D "$HDRS" -w '%{http_code}' \
		-H 'Content-Type: application/json' "$@" \
		--data-binary "$body" "$GATEWAY/v1/chat/completions" || true)
	MODEL=$(header "$HDRS" X-LLM-Model)
	PROVIDER=$(header "$HDRS" X-LLM-Provider)
	ROUTE=$(header "$HDRS" X-LLM-Route)
	ATTEMPTS=$(header "$HDRS" X-LLM-Attempts)
	TEXT=$(answer_text "$BODY")
	echo "    HTTP $STATUS  X-LLM-Model: ${MODEL:--}  X-LLM-Provider: ${PROVIDER:--}  X-LLM-Route: ${ROUTE:--}  X-LLM-Attempts: ${ATTEMPTS:--}"
	echo "    answer: $TEXT"
}

# expect <what> <got> <want>
expect() {
	if [[ $2 != "$3" ]]; then
		fail "$1: got '${2}', want '$3'"
	fi
}

mock_behavior() { # mock_behavior <model> <json>
	curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST \
		--data-binary "$2" "$MOCK/_mock/behavior?model=$1"
}

# ---------------------------------------------------------------- mock
UPSTREAM_KEY=sk-demo-upstream-0123456789
CLIENT_KEY=sk-demo-client-0123456789

echo "==> starting the mock upstream"
"$BIN_DIR/mockllm" -listen 127.0.0.1:0 -key "$UPSTREAM_KEY" >"$TMP/mock.log" 2>&1 &
MOCK_PID=$!
MOCK_ADDR=""
for ((i = 0; i < 100; i++)); do
	MOCK_ADDR=$(sed -n 's/^mockllm listening on //p' "$TMP/mock.log" | head -n 1)
	[[ -n $MOCK_ADDR ]] && break
	kill -0 "$MOCK_PID" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $MOCK_ADDR ]]; then
	echo "demo: the mock did not start:" >&2
	cat "$TMP/mock.log" >&2
	exit 1
fi
MOCK="http://$MOCK_ADDR"
TAKEN_PORTS="$TAKEN_PORTS ${MOCK_ADDR##*:}"
echo "    mock at $MOCK (requires Authorization: Bearer $UPSTREAM_KEY)"

# ---------------------------------------------------------------- caddy
write_caddyfile() { # write_caddyfile <port> <admin port>
	cat >"$TMP/Caddyfile" <<EOF
{
	admin 127.0.0.1:$2
	default_bind 127.0.0.1
	auto_https off
	log {
		level WARN
	}
}

http://127.0.0.1:$1 {
	# clients must send the gateway key (never forwarded upstream)
	@unauthorized not header Authorization "Bearer {env.GATEWAY_KEY}"
	respond @unauthorized \`{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}\` 401

	llm_router /v1/* {
		# two providers, both served by the mock
		provider holysheep {
			base_url $MOCK/v1
			api_key {env.DEMO_UPSTREAM_KEY}
			timeout 5s
		}
		provider backup {
			base_url $MOCK/v1
			api_key {env.DEMO_UPSTREAM_KEY}
			timeout 5s
		}
		model deepseek-v3.2 {
			fallback gemini-2.5-flash
		}
		model gemini-2.5-flash
		model gpt-4.1 {
			fallback claude-sonnet-4.5
		}
		model claude-sonnet-4.5 {
			provider backup
		}
		route simple_qa deepseek-v3.2 gemini-2.5-flash
		route complex_reasoning gpt-4.1 claude-sonnet-4.5
		default_route simple_qa
		currency CNY 1
		failover {
			first_byte_timeout 5s
		}
	}
}
EOF
}

echo "==> starting Caddy"
GATEWAY=""
for ((try = 1; try <= 3; try++)); do
	free_port PORT
	free_port ADMIN_PORT
	write_caddyfile "$PORT" "$ADMIN_PORT"
	# XDG dirs in $TMP: Caddy writes no state into $HOME
	XDG_CONFIG_HOME="$TMP/config" XDG_DATA_HOME="$TMP/data" \
		GATEWAY_KEY="$CLIENT_KEY" DEMO_UPSTREAM_KEY="$UPSTREAM_KEY" \
		"$BIN_DIR/caddy" run --config "$TMP/Caddyfile" --adapter caddyfile >"$TMP/caddy.log" 2>&1 &
	CADDY_PID=$!
	for ((i = 0; i < 150; i++)); do # up to 15 s
		if ! kill -0 "$CADDY_PID" 2>/dev/null; then
			break
		fi
		code=$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' \
			-H "Authorization: Bearer $CLIENT_KEY" "http://127.0.0.1:$PORT/v1/models" || true)
		if [[ $code == 200 ]]; then
			GATEWAY="http://127.0.0.1:$PORT"
			break
		fi
		sleep 0.1
	done
	[[ -n $GATEWAY ]] && break
	echo "    Caddy did not come up on port $PORT (attempt $try); its log:"
	sed 's/^/    | /' "$TMP/caddy.log" | tail -n 20
	stop "$CADDY_PID"
	CADDY_PID=""
done
if [[ -z $GATEWAY ]]; then
	echo "demo: Caddy did not start" >&2
	exit 1
fi
echo "    gateway at $GATEWAY/v1 (admin API on 127.0.0.1:$ADMIN_PORT)"
echo "    Caddyfile: llm_router with providers holysheep and backup, routes simple_qa and complex_reasoning"

AUTH=(-H "Authorization: Bearer $CLIENT_KEY")
MSG='"messages":[{"role":"user","content":"Where is my order?"}]'

# ---------------------------------------------------------------- requests
ask 'route simple_qa (named as the model)' "{\"model\":\"simple_qa\",$MSG}" "${AUTH[@]}"
expect status "$STATUS" 200
expect X-LLM-Model "$MODEL" deepseek-v3.2
expect X-LLM-Provider "$PROVIDER" holysheep
expect X-LLM-Route "$ROUTE" simple_qa
expect X-LLM-Attempts "$ATTEMPTS" 1
[[ -n $TEXT ]] || fail "no answer text"

ask 'route complex_reasoning (X-LLM-Route header)' "{$MSG}" "${AUTH[@]}" -H 'X-LLM-Route: complex_reasoning'
expect status "$STATUS" 200
expect X-LLM-Model "$MODEL" gpt-4.1
expect X-LLM-Provider "$PROVIDER" holysheep
expect X-LLM-Route "$ROUTE" complex_reasoning
expect X-LLM-Attempts "$ATTEMPTS" 1
[[ -n $TEXT ]] || fail "no answer text"

ask 'streaming, model claude-sonnet-4.5 (backup provider)' "{\"model\":\"claude-sonnet-4.5\",\"stream\":true,$MSG}" "${AUTH[@]}"
expect status "$STATUS" 200
expect X-LLM-Model "$MODEL" claude-sonnet-4.5
expect X-LLM-Provider "$PROVIDER" backup
expect X-LLM-Attempts "$ATTEMPTS" 1
ctype=$(header "$HDRS" Content-Type)
[[ $ctype == text/event-stream* ]] || fail "Content-Type: got '$ctype', want text/event-stream"
echo "    events: $(grep -c '^data:' "$BODY" || true), last: $(grep '^data:' "$BODY" | tail -n 1)"
grep -q '^data: \[DONE\]' "$BODY" || fail "the stream did not end with data: [DONE]"
if grep '^data:' "$BODY" | grep -q '"choices":\[\]'; then
	fail "the usage-only chunk the router asked for reached the client"
fi
[[ -n $TEXT ]] || fail "no answer text"

ask 'unknown model' "{\"model\":\"gpt-5-turbo\",$MSG}" "${AUTH[@]}"
expect status "$STATUS" 404
grep -q '"code":"model_not_found"' "$BODY" || fail "no model_not_found error code in: $(cat "$BODY")"

ask 'no client key' "{\"model\":\"simple_qa\",$MSG}"
expect status "$STATUS" 401

echo
echo "==> failover: the mock now answers 503 for deepseek-v3.2"
code=$(mock_behavior deepseek-v3.2 '{"status":503}' || true)
expect "mock control endpoint status" "$code" 204
ask 'route simple_qa while deepseek-v3.2 fails' "{\"model\":\"simple_qa\",$MSG}" "${AUTH[@]}"
expect status "$STATUS" 200
expect X-LLM-Model "$MODEL" gemini-2.5-flash
expect X-LLM-Provider "$PROVIDER" holysheep
expect X-LLM-Attempts "$ATTEMPTS" 2
[[ -n $TEXT ]] || fail "no answer text"
curl -sS --max-time 5 -o /dev/null -X DELETE "$MOCK/_mock/behavior" || true

echo
ELAPSED=$((SECONDS - START))
if ((FAILURES > 0)); then
	echo "==> demo FAILED: $FAILURES expectation(s) not met (${ELAPSED}s after build)"
	echo "    Caddy log:"
	sed 's/^/    | /' "$TMP/caddy.log" | tail -n 30
	exit 1
fi
echo "==> demo OK: every request answered as expected (${ELAPSED}s after build)"
