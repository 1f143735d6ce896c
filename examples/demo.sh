#!/usr/bin/env bash
# Builds Ringmaster, starts a demo node from examples/agent.toml in the background
# and drives it with nodectl. The agent keeps running afterwards; stop it with
#   target/release/nodectl quit
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=examples/lib.sh
. examples/lib.sh
start_agent examples/agent.toml examples/logs/agent.log

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
