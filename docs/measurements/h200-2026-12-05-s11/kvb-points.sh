# SPDX-License-Identifier: MIT
# Sourced by run3.sh and run4.sh: the kvb driver built, and
#   point ENV... -- KVB_ARGS   appends to $O/$POINTS (set by the caller) the
#                              point's header, kvb's result line and the
#                              last $CLOCK_LINES vkclock lines.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models KVB_APPEND=0 KVB_WARM_MS=300
export TURBO_PLUGIN_PATH=$B/plugins/cpu:$B/plugins/vulkan
gcc -O2 -o kvb docs/measurements/h200-2026-12-04-wide/kvb.c -Iabi -Lbuild/core -lturbokv -lm \
    -Wl,-rpath,$R/build/core || exit 1
point() {
    local env=()
    while [ "$1" != "--" ]; do env+=("$1"); shift; done
    shift
    echo "== ${env[*]} kvb vulkan $*" >> "$O/$POINTS"
    env "${env[@]}" timeout 60 ./kvb vulkan "$@" > "$O/tmp.txt" 2>&1
    grep -v '^#' "$O/tmp.txt" | grep -v vkclock >> "$O/$POINTS"
    grep vkclock "$O/tmp.txt" | tail -"$CLOCK_LINES" >> "$O/$POINTS"
}
