#!/usr/bin/env bash
# Builds Ringmaster, starts a demo node from examples/agent.toml in the background
# and drives it with nodectl. The agent keeps running afterwards; stop it with
#   target/release/nodectl quit
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins
bin=target/release
mkdir -p examples/logs

if "$bin/nodectl" --timeout 1 numwatchers >/dev/null 2>&1; then
    echo "An agent already answers on tcp://127.0.0.1:5555; stop it first: $bin/nodectl quit" >&2
    exit 1
fi

"$bin/nodeagent" --config examples/agent.toml </dev/null >>examples/logs/agent.log 2>&1 &
agent=$!
for _ in $(seq 100); do
    "$bin/nodectl" --timeout 1 numwatchers >/dev/null 2>&1 && break
    kill -0 "$agent" 2>/dev/null || { echo "nodeagent exited; see examples/logs/agent.log" >&2; exit 1; }
    sleep 0.1
done

run() { echo; echo "\$ nodectl $*"; "$bin/nodectl" "$@"; }
run status
run incr worker 3
run --json list worker
run nodeinfo
echo
echo "nodeagent (pid $agent) keeps running; its log is examples/logs/agent.log."
echo "Runtime changes such as the incr above are kept in examples/state/ and come back"
echo "when the agent restarts; delete that directory to start from the config alone."
echo "Try: $bin/nodectl --help   Stop it: $bin/nodectl quit"
