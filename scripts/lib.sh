# scripts/lib.sh: process handling shared by scripts/demo.sh and bench/run.sh.
# Source it, then call `setup_tmp <name>`: it makes $TMP and, on exit, stops
# $CADDY_PID and $MOCK_PID and removes $TMP (KEEP_TMP=1 keeps it).

stop() { # stop <pid>: TERM, wait up to 5 s, then KILL
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

setup_tmp() { # setup_tmp <name>
	LIB_NAME=$1
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/llm-router-$1.XXXXXX")
	MOCK_PID=""
	CADDY_PID=""
	trap lib_cleanup EXIT
	trap 'exit 130' INT TERM
}

lib_cleanup() {
	stop "$CADDY_PID"
	stop "$MOCK_PID"
	if [[ ${KEEP_TMP:-0} == 1 ]]; then
		echo "$LIB_NAME: files kept in $TMP"
	else
		rm -rf "$TMP"
	fi
}
