#!/bin/sh
# Regenerates packaging/completions/ and packaging/man/ from the binaries' clap
# definitions (nothing in them is written by hand):
#
#   completions/  NAME.bash, _NAME (zsh), NAME.fish for nodeagent, nodemeta,
#                 nodectl and nodetop
#   man/          nodeagent.1, nodemeta.1, nodetop.1, nodectl.1 and one
#                 nodectl-COMMAND.1 per nodectl sub-command
#
# Usage:
#   packaging/generate.sh                          build (debug) and generate
#   PROFILE=release packaging/generate.sh          build with --release first
#   BIN_DIR=target/release packaging/generate.sh   use binaries already built
#
# The e2e test `packaging` fails when these files differ from what the current
# binaries generate: run this script after changing a command line.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
comp="$root/packaging/completions"
man="$root/packaging/man"

if [ -z "${BIN_DIR:-}" ]; then
    profile=${PROFILE:-debug}
    if [ "$profile" = debug ]; then
        set --
    else
        set -- --profile "$profile"
    fi
    cargo build --quiet --manifest-path "$root/Cargo.toml" "$@" --bins \
        -p ringmaster-agent -p ringmaster-meta -p ringmaster-ctl
    BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/$profile"
fi
for bin in nodeagent nodemeta nodectl nodetop; do
    if [ ! -x "$BIN_DIR/$bin" ]; then
        echo "generate.sh: $BIN_DIR/$bin not found (BIN_DIR=$BIN_DIR)" >&2
        exit 1
    fi
done

# The output must not depend on who runs it.
unset RINGMASTER_CONFIG RINGMASTER_POOL RINGMASTER_POOLS RINGMASTER_ENDPOINT || true

# Start from empty directories, so that nothing stale stays behind (a page of
# a nodectl sub-command that is gone).
mkdir -p "$comp" "$man"
rm -f "$comp"/*.bash "$comp"/_* "$comp"/*.fish "$man"/*.1

for bin in nodeagent nodemeta nodectl nodetop; do
    for shell in bash zsh fish; do
        case $shell in
            zsh) file="$comp/_$bin" ;;
            *) file="$comp/$bin.$shell" ;;
        esac
        if [ "$bin" = nodectl ]; then
            "$BIN_DIR/$bin" completions "$shell" >"$file"
        else
            "$BIN_DIR/$bin" --completions "$shell" >"$file"
        fi
    done
done

"$BIN_DIR/nodectl" man --dir "$man"
for bin in nodeagent nodemeta nodetop; do
    "$BIN_DIR/$bin" --man >"$man/$bin.1"
done

echo "generated $(ls "$comp" | wc -l) completion scripts in packaging/completions," \
    "$(ls "$man" | wc -l) man pages in packaging/man"
