# Shared by examples/demo.sh and examples/circus.sh (sourced, from the repository
# root): build everything, then start one agent in the background. demo.sh's agent
# listens on its default ipc:// socket, circus.sh's on Circus's tcp://127.0.0.1:5555;
# nodectl is pointed at whichever the config uses ($RINGMASTER_ENDPOINT).

bin=target/release

# start_agent CONFIG LOG: builds, starts nodeagent on CONFIG with its log in LOG,
# waits until it answers and sets $agent to its pid. Refuses when an agent
# already answers there.
start_agent() {
    local config=$1 log=$2
    cargo build --release --workspace --bins
    mkdir -p examples/logs
    if "$bin/nodectl" --timeout 1 numwatchers >/dev/null 2>&1; then
        echo "An agent already answers on ${RINGMASTER_ENDPOINT:-its default endpoint}; stop it first: $bin/nodectl quit" >&2
        exit 1
    fi
    "$bin/nodeagent" --config "$config" </dev/null >>"$log" 2>&1 &
    agent=$!
    for _ in $(seq 100); do
        "$bin/nodectl" --timeout 1 numwatchers >/dev/null 2>&1 && return 0
        kill -0 "$agent" 2>/dev/null || { echo "nodeagent exited; see $log" >&2; exit 1; }
        sleep 0.1
    done
    echo "nodeagent did not answer within 10 s; see $log" >&2
    exit 1
}
