#!/usr/bin/env bash
# A pool in one command: builds Ringmaster, makes the pool's keys, starts three
# agents on this machine (examples/pool/node-*.toml) and a nodemeta relay, then
# drives the pool with nodectl. Everything keeps running afterwards; stop it all with
#   examples/pool.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
pools=examples/pool/pools.toml
run_dir=examples/logs
export RINGMASTER_POOLS="$PWD/$pools"

if [ "${1:-}" = stop ]; then
    "$bin/nodectl" --pool demo quit || true
    if [ -f "$run_dir/nodemeta.pid" ]; then
        kill "$(cat "$run_dir/nodemeta.pid")" 2>/dev/null || true
        rm -f "$run_dir/nodemeta.pid"
    fi
    exit 0
fi

cargo build --release --workspace --bins
mkdir -p "$run_dir" examples/keys

# The pool's keys (once): the agents require sealed frames, nodectl uses them
# through the pools file.
for key in admin read; do
    [ -f "examples/keys/$key.key" ] || "$bin/nodectl" keygen "examples/keys/$key.key" >/dev/null
done

if "$bin/nodectl" --pool demo --timeout 1 numwatchers >/dev/null 2>&1; then
    echo "The demo pool is already running; stop it first: examples/pool.sh stop" >&2
    exit 1
fi

for i in 1 2 3; do
    "$bin/nodeagent" --config "examples/pool/node-$i.toml" </dev/null >>"$run_dir/node-$i.log" 2>&1 &
done
"$bin/nodemeta" --pool demo --pubsub tcp://127.0.0.1:5570 </dev/null >>"$run_dir/nodemeta.log" 2>&1 &
echo $! >"$run_dir/nodemeta.pid"

# Wait (up to 10 s) until every node answers.
for _ in $(seq 100); do
    "$bin/nodectl" --pool demo --timeout 1 numwatchers >/dev/null 2>&1 && break
    sleep 0.1
done

run() { echo; printf "$ nodectl --pool demo"; printf " %q" "$@"; echo; "$bin/nodectl" --pool demo "$@"; }
run nodes
run status
run add web -n 4 --strategy spread:zone --dry-run --cmd "sleep 3600"
run add web -n 4 --strategy spread:zone --start --cmd "sleep 3600"
run incr worker 2 --strategy fewest-processes
run --where zone=eu-1 status
run restart web --batch 1
run exec -- 'echo "{{node}} in {{label.zone}}: $(uptime)"'
sleep 1.5 # let every node publish its first statistics sample
run stats

echo
echo "The pool keeps running: nodes log to $run_dir/node-*.log, the relay to $run_dir/nodemeta.log."
echo "Watch it live:          $bin/nodetop --pools $pools --pool demo"
echo "  or through nodemeta:  $bin/nodetop --pubsub tcp://127.0.0.1:5570 --key examples/keys/read.key"
echo "Follow every event:     $bin/nodectl --pools $pools --pool demo listen event."
echo "Stop it all:            examples/pool.sh stop"
