# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_nodectl_global_optspecs
    string join \n e/endpoint= p/pool= node= where= pools= key= timeout= json no-wait h/help V/version
end

function __fish_nodectl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_nodectl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_nodectl_using_subcommand
    set -l cmd (__fish_nodectl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c nodectl -n "__fish_nodectl_needs_command" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_needs_command" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_needs_command" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_needs_command" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_needs_command" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_needs_command" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_needs_command" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_needs_command" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_needs_command" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_needs_command" -s V -l version -d 'Print version'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "status" -d 'State of every watcher, or of one'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "list" -d 'Watcher names, or the processes of one watcher'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "start" -d 'Start a watcher (without a name: every autostart watcher, by priority)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "stop" -d 'Stop a watcher gracefully (without a name: every watcher)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "restart" -d 'Stop, then start a watcher (without a name: every active watcher)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "reload" -d 'Graceful reload: start new processes, then stop the old ones'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "incr" -d 'Add processes to a watcher'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "decr" -d 'Remove processes from a watcher (the oldest first)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "add" -d 'Add a watcher at run time (kept across agent restarts)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "rm" -d 'Remove a watcher, stopping its processes'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "set" -d 'Change watcher options: `set NAME KEY VALUE [KEY VALUE ...]`'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "get" -d 'Read watcher options'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "options" -d 'Every option of a watcher'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "globaloptions" -d 'The agent\'s own options'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "signal" -d 'Send a signal: `signal NAME [PID] SIGNAL`'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "numprocesses" -d 'Number of processes alive, of one watcher or of all'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "numwatchers" -d 'Number of watchers'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "listsockets" -d 'The agent\'s listening sockets: name, descriptor, address, backlog and the watchers that use them'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "reloadconfig" -d 'Re-read the agent\'s config file and apply what changed'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "quit" -d 'Stop every watcher and the agent'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "upgrade" -d 'Upgrade the agent in place: it re-executes itself (BINARY, else the binary it runs) with the same pid, and every process keeps running'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "nodeinfo" -d 'Node name, labels, version, uptime, CPUs, memory, load, process count'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "stats" -d 'CPU, memory, threads and age of every process (the latest sample)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "dstats" -d 'The agent\'s own CPU and memory use'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "nodes" -d 'On a pool: each node\'s reachability, version, labels, load, memory, processes and round-trip time'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "exec" -d 'Run a shell command line on the node (`/bin/sh -c`); needs `allow_exec = true` in the agent\'s config. Exits with the command\'s exit code'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "logs" -d 'Print a watcher\'s recent output lines; with -f, then new ones as they come'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "reopen" -d 'Reopen every output file the agent writes, after an external log rotation (SIGUSR1 to the agent does the same)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "listen" -d 'Print events, statistics and captured output lines as they are published, until interrupted'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "completions" -d 'Print nodectl\'s completion script for a shell'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "man" -d 'Print nodectl\'s man page, or write all its pages into a directory'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "keygen" -d 'Write a new random key to FILE (mode 0600; never overwrites)'
complete -c nodectl -n "__fish_nodectl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand status" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand list" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand start" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l batch -d 'On a pool: N nodes at a time; the next batch starts only once the previous one runs again, and the first failing batch stops the rollout' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l settle -d 'With --batch: seconds a batch must keep running, with the same pids, before the next one starts' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand restart" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l batch -d 'On a pool: N nodes at a time; the next batch starts only once the previous one runs again, and the first failing batch stops the rollout' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l settle -d 'With --batch: seconds a batch must keep running, with the same pids, before the next one starts' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l sequential -d 'Replace one process at a time'
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l strategy -d 'On a pool: how to choose nodes: least-loaded, round-robin, fewest-processes or spread:LABEL' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l dry-run -d 'On a pool: show where processes would go, and why, without changing anything'
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand incr" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand decr" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l cmd -d 'The command line as one string (instead of trailing arguments)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -s n -l numprocesses -d 'Number of processes (on a pool: in all, spread by the strategy)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l strategy -d 'On a pool: how to choose nodes: least-loaded, round-robin, fewest-processes or spread:LABEL' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -s o -l option -d 'Any watcher option, as KEY=VALUE (repeatable)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l dry-run -d 'On a pool: show where processes would go, and why, without changing anything'
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l start -d 'Start it at once'
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l nostop -d 'Leave its processes running, unsupervised'
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand rm" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand set" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand get" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand options" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand globaloptions" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l children -d 'Send it to the process group (the process and its children)'
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand signal" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand numprocesses" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand numwatchers" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand listsockets" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand reloadconfig" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand quit" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l binary -d 'The new nodeagent binary: a path on the node (absolute, or relative to this directory when nodectl runs there too)' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l batch -d 'On a pool: N nodes at a time (default: all at once)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand upgrade" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodeinfo" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand dstats" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand nodes" -s h -l help -d 'Print help'
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l exec-timeout -d 'Seconds the command may run before its process group is killed' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand exec" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -s n -l lines -d 'How many recent lines to print first (the agent keeps up to 1000 per watcher)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l stream -d 'Only this stream' -r -f -a "stdout\t'Standard output'
stderr\t'Standard error'"
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -s f -l follow -d 'Keep printing new lines until interrupted'
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand reopen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l count -d 'Stop after this many printed lines (one per event, statistic or output line)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l pubsub -d 'Subscribe to this publish endpoint directly (repeatable), e.g. a nodemeta relay, instead of asking --endpoint' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand listen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l dir -d 'Write nodectl.1 and nodectl-COMMAND.1 pages into this directory (created if missing) instead of printing nodectl.1' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -s e -l endpoint -d 'The agent\'s control endpoint [default: the agent\'s own ipc:// socket in its runtime directory: /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock; $RINGMASTER_RUNTIME_DIR moves it]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -s p -l pool -d 'Run the command on every node of this pool (see --node, --where)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l node -d 'Only these nodes of the pool (comma-separated or repeated). Without --pool, the pool that has them' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l where -d 'Only nodes whose labels match: LABEL=VALUE or LABEL!=VALUE (repeatable; all must hold)' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l pools -d 'The pools file' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l key -d 'Key file for an agent with keys: its admin key, or its read key to only read (repeatable, or \':\'-separated in $RINGMASTER_KEY; the first seals requests, any opens what comes back). On a pool, replaces the pool\'s `key`' -r -F
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l timeout -d 'Seconds to wait for the answer [default: 5 for queries, 120 for commands that start or stop processes; on a pool, the pool\'s timeout to reach each node]' -r
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l json -d 'Print the answer as JSON'
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -l no-wait -d 'Return as soon as the agent accepted the command, without waiting for it to finish'
complete -c nodectl -n "__fish_nodectl_using_subcommand keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "status" -d 'State of every watcher, or of one'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "list" -d 'Watcher names, or the processes of one watcher'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "start" -d 'Start a watcher (without a name: every autostart watcher, by priority)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "stop" -d 'Stop a watcher gracefully (without a name: every watcher)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "restart" -d 'Stop, then start a watcher (without a name: every active watcher)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "reload" -d 'Graceful reload: start new processes, then stop the old ones'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "incr" -d 'Add processes to a watcher'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "decr" -d 'Remove processes from a watcher (the oldest first)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "add" -d 'Add a watcher at run time (kept across agent restarts)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "rm" -d 'Remove a watcher, stopping its processes'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "set" -d 'Change watcher options: `set NAME KEY VALUE [KEY VALUE ...]`'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "get" -d 'Read watcher options'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "options" -d 'Every option of a watcher'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "globaloptions" -d 'The agent\'s own options'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "signal" -d 'Send a signal: `signal NAME [PID] SIGNAL`'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "numprocesses" -d 'Number of processes alive, of one watcher or of all'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "numwatchers" -d 'Number of watchers'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "listsockets" -d 'The agent\'s listening sockets: name, descriptor, address, backlog and the watchers that use them'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "reloadconfig" -d 'Re-read the agent\'s config file and apply what changed'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "quit" -d 'Stop every watcher and the agent'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "upgrade" -d 'Upgrade the agent in place: it re-executes itself (BINARY, else the binary it runs) with the same pid, and every process keeps running'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "nodeinfo" -d 'Node name, labels, version, uptime, CPUs, memory, load, process count'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "stats" -d 'CPU, memory, threads and age of every process (the latest sample)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "dstats" -d 'The agent\'s own CPU and memory use'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "nodes" -d 'On a pool: each node\'s reachability, version, labels, load, memory, processes and round-trip time'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "exec" -d 'Run a shell command line on the node (`/bin/sh -c`); needs `allow_exec = true` in the agent\'s config. Exits with the command\'s exit code'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "logs" -d 'Print a watcher\'s recent output lines; with -f, then new ones as they come'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "reopen" -d 'Reopen every output file the agent writes, after an external log rotation (SIGUSR1 to the agent does the same)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "listen" -d 'Print events, statistics and captured output lines as they are published, until interrupted'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "completions" -d 'Print nodectl\'s completion script for a shell'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "man" -d 'Print nodectl\'s man page, or write all its pages into a directory'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "keygen" -d 'Write a new random key to FILE (mode 0600; never overwrites)'
complete -c nodectl -n "__fish_nodectl_using_subcommand help; and not __fish_seen_subcommand_from status list start stop restart reload incr decr add rm set get options globaloptions signal numprocesses numwatchers listsockets reloadconfig quit upgrade nodeinfo stats dstats nodes exec logs reopen listen completions man keygen help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
