complete -c nodetop -s e -l endpoint -d 'An agent\'s control endpoint (repeatable)' -r
complete -c nodetop -l pubsub -d 'A publish endpoint to subscribe to directly (repeatable): an agent\'s, or a nodemeta relay\'s' -r
complete -c nodetop -s p -l pool -d 'Show every node of this pool of the pools file (see --node, --where). From the environment, it applies only when neither --endpoint nor --pubsub is given' -r
complete -c nodetop -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodetop -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodetop -l pools -d 'The pools file' -r -F
complete -c nodetop -l key -d 'Key file for agents with keys: their read or admin key (repeatable, or \':\'-separated in $RINGMASTER_KEY). With --pool, replaces the pool\'s `key`' -r -F
complete -c nodetop -l refresh -d 'Seconds between two refreshes of the screen' -r
complete -c nodetop -l timeout -d 'Seconds to wait for each agent\'s answer at start' -r
complete -c nodetop -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodetop -s V -l version -d 'Print version'
