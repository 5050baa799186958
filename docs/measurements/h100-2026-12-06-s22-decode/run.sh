#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 22: fewer instructions a tile in kernels/tensor.cl, each step a
# plugin of its own (build/muts/vX/turbokv-opencl.so, copied over
# build/plugins/opencl for its bench: turbokv takes the build's plugins
# first), all in one run:
#   v0  main at the start of the session (8070f11);
#   vA  table keys: one shift and one LOP3, the tables' address a constant
#       of the loads (was a shift, an AND and an ADD);
#   vB  + V's sums rescaled only where a running max of the warp moved;
#   vC  + sparse V's test against the exchanged max as s - m >= log2(t)
#       (no exp2);
#   vD  + field reads by one funnel shift (no select);
#   vE  + the next fetch's block and row followed, not divided, a tile;
#   vF  + the scores' products in six chains of four (even and odd steps)
#       instead of three of eight (one n-tile);
#   vG  + the tile loop's 2^x by ex2.approx.ftz (a correction of 1 where
#       the max stayed).
# Run 1: VARIANTS="v0 vA vB vC vD vE" LAST=vE; run 2: VARIANTS="v0 vE vF vG"
# LAST=vH PERTOKEN="vG vH", with mut1 (vG without the rescaling of V's
# sums: it never takes the branch); vH = vG's kernels with the OpenCL
# appends of a K/V pair (ABI 2.5) flushed once and the values' reusing the
# keys' block-table upload.
# Writes into $OUT/run.tgz: device.txt; sass-*.txt (cuobjdump of NVIDIA's
# own PTX of each of v0 and the last variant, through ptxas, and the
# opcode counts of tc_decode_8 / tc_decode_o8); build.txt (registers);
# conformance*.txt (test_backends opencl with the last variant);
# bench-vX.txt (turbo3, turbo3o, 1 token x 1 sequence); per-token.txt;
# trace*.txt (TRACE=1, from run 2: the per-token mode under cltrace.c,
# built into build/muts/cltrace.so); sdpa.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
: "${VARIANTS:=v0 vA vB vC vD vE vF vG}" "${LAST:=vG}" "${CTX:=4K,16K,128K}"
B="turbokv bench --backend opencl --types ${TYPES:-turbo3,turbo3o} --ctx $CTX --tokens 1 --seqs 1"
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
# the machine code NVIDIA's compiler makes of v0's and the last variant's
# tensor program (its PTX through ptxas)
for v in v0 $LAST; do
  use $v
  TURBO_OCL_DUMP_BINARY=$W/ptx-$v TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 \
    timeout 100 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K --tokens 1 --seqs 1 > "$W/build-$v.txt" 2>&1
  if [ -f "$W/ptx-$v.tensor" ]; then
    # (the driver's binary ends in a NUL, which ptxas refuses)
    tr -d '\000' < "$W/ptx-$v.tensor" > "$W/$v.ptx"
    ptxas -arch=sm_90 "$W/$v.ptx" -o "$W/$v.cubin" > "$W/ptxas-$v.txt" 2>&1 && cuobjdump -sass "$W/$v.cubin" > "$W/sass-$v.txt" 2>&1
    for k in tc_decode_8 tc_decode_o8; do
      awk -v k="$k" '/Function : /{f = index($0, k) && !index($0, k "x")} f' "$W/sass-$v.txt" |
        grep -oE '^ +/\*[0-9a-f]+\*/ +[@!A-Z0-9_.]+( [A-Z0-9_.]+)?' | awk '{o = $2; if (o ~ /^@/) o = $3; sub(/\..*/, "", o); n[o]++; t++} END {for (o in n) print n[o], o; print t, "TOTAL"}' |
        sort -rn > "$W/ops-$v-$k.txt"
    done
  fi
  rm -f "$W"/ptx-$v* "$W/$v.cubin"; gzip -f "$W/$v.ptx" "$W/sass-$v.txt" 2>/dev/null
done
use $LAST
(echo "== test_backends opencl (${TESTS:=attention_agrees,paged_and_options_agree,sparse_v_counts}), $LAST"
 TKV_TESTS=$TESTS timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
(echo "== TURBO_OCL_MIN_TILES=4 test_backends opencl (attention_agrees,paged_and_options_agree), $LAST"
 TURBO_OCL_MIN_TILES=4 TKV_TESTS=attention_agrees,paged_and_options_agree timeout 200 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance-tiles.txt" 2>&1
# mutants (build/muts/mutN: the last variant with one part left out) on
# the attention tests with four tiles a warp
for m in build/muts/mut*/; do
  [ -f "$m/turbokv-opencl.so" ] || continue
  n=$(basename "$m")
  (echo "== mutant $m: TURBO_OCL_MIN_TILES=4 test_backends opencl (attention_agrees,paged_and_options_agree)"
   TURBO_OCL_MIN_TILES=4 TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/$m TKV_TESTS=attention_agrees,paged_and_options_agree timeout 150 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/mutant-$n.txt" 2>&1
done
for v in $VARIANTS v0 $LAST; do
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 $B"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=20 timeout 150 build/tools/$B; echo "rc $? at ${SECONDS} s") >> "$W/bench-$v.txt" 2>&1
done
for v in ${PERTOKEN:-$LAST}; do
  [ $v = none ] && continue
  use $v
  (echo "== ($v) turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
   timeout 150 build/tools/turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300; echo "rc $? at ${SECONDS} s") >> "$W/per-token.txt" 2>&1
done
use $LAST
if [ "${TRACE:-1}" = 1 ] && [ -f build/muts/cltrace.so ]; then
  # the host's time in each OpenCL call of the per-token mode (cltrace.c)
  (echo "== ($LAST) CLTRACE_SEQ=1 LD_PRELOAD=cltrace.so turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32"
   CLTRACE_SEQ=1 LD_PRELOAD=$R/build/muts/cltrace.so timeout 100 build/tools/turbokv bench --backend opencl --per-token --types turbo3 --ctx 4K --layers 32; echo "rc $? at ${SECONDS} s") > "$W/trace.txt" 2>&1
  grep -v "^cltrace: cl[A-Za-z]* [0-9.]*$" "$W/trace.txt" > "$W/trace-summary.txt"; gzip -f "$W/trace.txt"
fi
use $LAST
[ "${SDPA:-1}" = 1 ] && (echo "== python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072"
 timeout 120 python3 scripts/sdpa-baseline.py --ctx 4096,16384,131072; echo "rc $?") > "$W/sdpa.txt" 2>&1
tar czf "$O/run.tgz" -C "$W" .
cat "$W/device.txt"
for f in "$W"/ops-*; do echo "$(basename $f): $(grep TOTAL $f) $(grep -E ' (LDS|IADD3|LOP3|SHF|MUFU|HMMA)$' $f | tr '\n' ' ')"; done
grep -h -B1 -A3 "tc_decode" "$W"/build-*.txt | grep -i "used\|spill" | head -8
grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -6
grep -v "^ *$\|warning generated" "$W/conformance-tiles.txt" | tail -4
for f in "$W"/mutant-*.txt; do [ -f "$f" ] && head -1 "$f" && grep -i "relative error\|FAILED\|rc " "$f" | tail -4; done
for v in $VARIANTS; do echo "== $v"; grep -A4 "^device time" "$W/bench-$v.txt" | grep -v "^--"; grep -i "error\|rc " "$W/bench-$v.txt" | tail -2; done
grep "V rows skipped" -A2 "$W/bench-$LAST.txt" | head -6
[ -f "$W/per-token.txt" ] && grep "^==\|^turbo" "$W/per-token.txt"
[ -f "$W/trace-summary.txt" ] && tail -14 "$W/trace-summary.txt"
[ -f "$W/sdpa.txt" ] && tail -4 "$W/sdpa.txt"
