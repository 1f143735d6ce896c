complete -c nodeagent -s c -l config -d 'The agent\'s config file: TOML, or a Circus INI file (circus.ini)' -r -F
complete -c nodeagent -l check-config -d 'Check a config file (FILE, else the --config one), print it as the agent understands it (TOML, warnings first) and exit: 0 when it is valid, 2 when it is not' -r -F
complete -c nodeagent -l resume-from -d 'Take over from the agent image that wrote this handover (an upgrade in place executes the new binary with it; not for use by hand)' -r -F
complete -c nodeagent -l check-upgrade -d 'Check that this binary can take over with this handover, the config and the state directory, and exit: 0 when it can, 2 when it cannot (run by an upgrade in place before it hands over; not for use by hand)' -r -F
complete -c nodeagent -l log-format -d 'How log lines look: auto (journald\'s format when stderr is the journal, else human), human, journald, or json' -r -f -a "auto\t'The journald format when stderr is the journal ($JOURNAL_STREAM), else human'
human\t'Timestamp, level and message; colours only on a terminal'
journald\t'Syslog-style priority prefixes (<6>message), no timestamp: for systemd\'s journal'
json\t'One JSON object per line: timestamp, level, message and fields'"
complete -c nodeagent -s v -l verbose -d 'More log output (-v: debug, -vv: trace). RUST_LOG overrides'
complete -c nodeagent -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodeagent -s V -l version -d 'Print version'
