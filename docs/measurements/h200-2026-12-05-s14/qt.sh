#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 14's third run: query rows per unit (QT) where decode.comp's
# registers spill. turbo4 with 4 query tokens (QT 8) takes 346 us at 4K
# against turbo3's 47 (run.sh), turbo3o (QT 4) reports 208 bytes of local
# memory (diag.sh). Each point with the default QT and with
# TURBO_VK_DECODE_QT set lower, ABAB, and the pipelines' statistics
# (TURBO_VK_PROFILE=1). All in qt.txt; the SM and memory clocks in
# clocks.txt.
set -u
R=$PWD
B=$R/build
O=${OUT:-/tmp/out}
mkdir -p "$O"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 100 > "$O/clocks.txt" 2>&1 &
smi=$!
POINTS=qt.txt CLOCK_LINES=0
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
mark() { echo "== $(date +%T.%N | cut -c1-12) $*" >> "$O/qt.txt"; }
prof() {
    mark "TURBO_VK_PROFILE=1 $*"
    env TURBO_VK_PROFILE=1 "$@" > "$O/tmp.txt" 2>&1
    grep "vkprof: pipeline attention" "$O/tmp.txt" | sed 's/.*(spec/(spec/' | cut -c1-300 >> "$O/qt.txt"
    grep "vkprof: attention n_out" "$O/tmp.txt" | sed 's/: up.*//' | uniq -c >> "$O/qt.txt"
}
# warm the GPU out of its idle state first (diag.sh's first points were slow)
KVB_WARM_MS=2000 timeout 60 ./kvb vulkan turbo3 16K 1x1 0 2 > /dev/null 2>&1
for r in 1 2; do
    mark round $r
    point KVB=default -- turbo4,turbo3,turbo2 4K,16K,128K 4x1 0 4
    point TURBO_VK_DECODE_QT=4 -- turbo4,turbo3,turbo2 4K,16K,128K 4x1 0 4
    point KVB=default -- turbo3o 4K,16K,128K 1x1,4x1 0 4
    point TURBO_VK_DECODE_QT=2 -- turbo3o 4K,16K,128K 1x1,4x1 0 4
done
prof timeout 60 ./kvb vulkan turbo4,turbo2 4K 4x1 0 2
prof env TURBO_VK_DECODE_QT=4 timeout 60 ./kvb vulkan turbo4 4K 4x1 0 2
prof timeout 60 ./kvb vulkan turbo3o 4K 1x1,4x1 0 2
prof env TURBO_VK_DECODE_QT=2 timeout 60 ./kvb vulkan turbo3o 4K 1x1,4x1 0 2
kill $smi
rm -f "$O/tmp.txt"
