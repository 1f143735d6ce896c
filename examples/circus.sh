#!/usr/bin/env bash
# Runs a Circus config (examples/circus.ini) with Ringmaster's nodeagent, in the
# background, and drives it the way a Circus user would: with circusctl when it is
# installed (pip install circus; .ci/run puts one in target/circus-venv), else with
# nodectl. Stop it with:
#   target/release/nodectl quit      (or: circusctl quit)
set -euo pipefail
cd "$(dirname "$0")/.."

# circus.ini names Circus's TCP endpoint; nodectl goes there too.
export RINGMASTER_ENDPOINT=tcp://127.0.0.1:5555
# shellcheck source=examples/lib.sh
. examples/lib.sh
start_agent examples/circus.ini examples/logs/circus-agent.log

echo
echo "\$ nodeagent --check-config examples/circus.ini    (what Ringmaster makes of it)"
"$bin/nodeagent" --check-config examples/circus.ini | sed -n '1,12p'
echo "..."

circusctl=""
for candidate in "${CIRCUSCTL:-}" target/circus-venv/bin/circusctl "$(command -v circusctl || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then circusctl=$candidate; break; fi
done

if [ -n "$circusctl" ]; then
    run() { echo; echo "\$ circusctl $*"; "$circusctl" --endpoint tcp://127.0.0.1:5555 "$@"; }
    run status
    run listsockets
    run incr web 2 --waiting
    run get web numprocesses
    run decr web 2 --waiting
    run stats worker
else
    echo
    echo "(circusctl is not installed: pip install circus to drive the agent with it; nodectl here)"
    run() { echo; echo "\$ nodectl $*"; "$bin/nodectl" "$@"; }
    run status
    run listsockets
    run incr web 2
    run decr web 2
fi

echo
echo "\$ for i in 1 2 3 4 5 6; do <one HTTP request to 127.0.0.1:8080>; done"
for _ in 1 2 3 4 5 6; do
    # Bash's /dev/tcp: no curl needed. Each answer names the worker that served it.
    exec 3<>/dev/tcp/127.0.0.1/8080
    printf 'GET / HTTP/1.0\r\n\r\n' >&3
    tail -n 1 <&3
    exec 3<&-
done

echo
echo "nodeagent (pid $agent) keeps running the Circus config; its log is"
echo "examples/logs/circus-agent.log, the workers write to examples/logs/circus-*.log."
echo "Runtime changes (incr, set, add, rm) are kept in examples/state/ and come back"
echo "when the agent restarts (circusd would forget them); delete"
echo "examples/state/circus-demo.state.json to start from the file alone."
echo "The same file runs under circusd too: circusd examples/circus.ini"
echo "Try: $bin/nodectl logs -f worker    $bin/nodectl reload web    $bin/nodetop"
echo "Stop it: $bin/nodectl quit"
