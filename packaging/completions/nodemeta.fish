complete -c nodemeta -l pool -d 'The pool to relay, by name in the pools file' -r
complete -c nodemeta -l pools -d 'The pools file [default: $RINGMASTER_POOLS, then ~/.config/ringmaster/pools.toml, then /etc/ringmaster/pools.toml]' -r -F
complete -c nodemeta -l pubsub -d 'The endpoint to publish on: tcp://HOST:PORT (loopback unless --insecure) or ipc:///PATH' -r
complete -c nodemeta -l interval -d 'Seconds between two `stat.pool` messages; also the stats interval assumed for a node until it publishes its own' -r
complete -c nodemeta -l stale-after -d 'A node silent for this many of its stats intervals is stale' -r
complete -c nodemeta -l key -d 'Key file(s) to open the agents\' frames with and to seal what nodemeta publishes (repeatable, or \':\'-separated in $RINGMASTER_KEY) [default: the pool\'s `key` in the pools file]. nodemeta seals its own messages with the last key: list the read key last so that read-only subscribers can open them' -r -F
complete -c nodemeta -l log-format -d 'How log lines look: auto (journald\'s format when stderr is the journal, else human), human, journald, or json' -r -f -a "auto\t'The journald format when stderr is the journal ($JOURNAL_STREAM), else human'
human\t'Timestamp, level and message; colours only on a terminal'
journald\t'Syslog-style priority prefixes (<6>message), no timestamp: for systemd\'s journal'
json\t'One JSON object per line: timestamp, level, message and fields'"
complete -c nodemeta -l insecure -d 'Allow binding a non-loopback TCP address without keys (nothing is encrypted or authenticated: use a private network)'
complete -c nodemeta -s v -l verbose -d 'More log output (-v: debug, -vv: trace). RUST_LOG overrides'
complete -c nodemeta -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodemeta -s V -l version -d 'Print version'
