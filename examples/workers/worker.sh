#!/bin/sh
# A demo worker: says hello every 2 seconds until it is asked to stop.
wid="$1"
trap 'echo "worker $wid: stopping"; exit 0' TERM INT
while true; do
    echo "$GREETING worker $wid (pid $$)"
    sleep 2 &
    wait $!
done
