#!/bin/bash
# SPDX-License-Identifier: MIT
# decode.comp's clock records on the H200 (TURBO_VK_CLOCK=1): where a turbo3
# call's device time goes, at 4K / 16K / 128K, 1 and 4 query tokens, and at
# 4K with other chunk sizes; beside it the call without the records.
#   clock.txt  per point: kvb's result line and the last vkclock lines
# From a copy of the tree (build/ present) after `. .gpurt/enter.sh`;
# output under $OUT. About 2 minutes.
POINTS=clock.txt CLOCK_LINES=3
source docs/measurements/h200-2026-12-05-s11/kvb-points.sh
for ctx in 4K 16K 128K; do
    point TURBO_VK_CLOCK=0 -- turbo3 $ctx 1x1 0 8
    point TURBO_VK_CLOCK=1 -- turbo3 $ctx 1x1 0 8
    point TURBO_VK_CLOCK=1 -- turbo3 $ctx 4x1 0 8
done
for mc in 256 512 1024; do
    point TURBO_VK_CLOCK=1 TURBO_VK_MIN_CHUNK=$mc -- turbo3 4K 1x1 0 8
done
point TURBO_VK_CLOCK=1 TURBO_VK_WORKGROUPS=4096 -- turbo3 4K 1x1 0 8
point TURBO_VK_CLOCK=1 TURBO_VK_WORKGROUPS=4096 -- turbo3 128K 1x1 0 8
rm -f "$O/tmp.txt"
