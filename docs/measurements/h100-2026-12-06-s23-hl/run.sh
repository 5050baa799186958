#!/bin/bash
# SPDX-License-Identifier: MIT
# Session 23: two cuts in kernels/tensor.cl's tile loop, each step a plugin
# of its own (build/muts/vX/turbokv-opencl.so, copied over
# build/plugins/opencl for its bench: turbokv takes the build's plugins
# first), all in one run:
#   v0   main at the start of the session (a0342cc);
#   vA   a table entry's hi and lo pairs side by side, one 8-byte load
#        (was two 4-byte loads, 8 KB apart);
#   vB   + units of 4 query rows (one token at GQA 4; turbo3o always) with
#        the rows' fp16 hi halves in columns 0..3 of the products and their
#        lo halves in 4..7: two mma a step instead of three, for K and V
#        (tc_decode_4, tc_decode_o4);
#   vC   vB without vA's change (the 8-byte loads were slower in run 1)
#        and with kernels/rows.cl's encode taking its squared centroids
#        and its norm's lane sums in parallel (a decode token's append:
#        one global round trip instead of sixteen in a row): the tree;
#   mut1 vB without the shuffle that adds columns c and c + 4 of a score;
#   p25  session 22's last plugin (ABI 2.5: a K/V pair appended by two
#        launches), for the per-token mode against v0 (ABI 2.6: one).
# Run 1: SHAPES=vB SHAPES_UNTIL=300 TRACE=0 (VARIANTS v0 vA vB, LAST vB);
# run 2 (after five calls that found no machine): TMPDIR=$OUT TESTS=attention_agrees
# TILES=0 VARIANTS= LAST=vC SASS= PERTOKEN=vC SHAPES_UNTIL=0 PROF_CTX= TRACE=0
# SDPA=0, mut1 removed.
# Writes into $OUT/run.tgz: device.txt; sass-*.txt (cuobjdump of NVIDIA's
# own PTX of v0 and the last variant, through ptxas, and the opcode counts
# of its tensor kernels); build-*.txt (registers); conformance*.txt
# (test_backends opencl with the last variant); bench-vX.txt (turbo3,
# turbo3o, 1 token x 1 sequence); shapes-vX.txt (the bench's three shapes,
# turbo3, where time allows); per-token.txt; prof.txt (the per-token mode's
# commands' device times under clprof.c, build/muts/clprof.so); trace*.txt
# (its host time under cltrace.c, build/muts/cltrace.so); sdpa.txt.
set -u
R=$PWD
O=${OUT:-/tmp/out}
W=$(mktemp -d)
export TKV_DEFAULT_CONFIG=$R/etc/turbokv.yaml TKV_MODELS_DIR=$R/models
export TURBO_PLUGIN_PATH=$R/build/plugins/cpu:$R/build/plugins/opencl
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$W/device.txt" 2>&1
: "${VARIANTS=v0 vA vB}" "${LAST:=vB}" "${CTX:=4K,16K,128K}"
B="turbokv bench --backend opencl --types ${TYPES:-turbo3,turbo3o} --ctx $CTX --tokens 1 --seqs 1"
use() { cp build/muts/$1/turbokv-opencl.so build/plugins/opencl/turbokv-opencl.so; }
# the machine code NVIDIA's compiler makes of v0's and the last variant's
# tensor program (its PTX through ptxas)
for v in ${SASS-v0 $LAST}; do
  use $v
  TURBO_OCL_DUMP_BINARY=$W/ptx-$v TURBO_OCL_CL_OPTIONS=-cl-nv-verbose TURBO_OCL_BUILD_LOG=1 \
    timeout 100 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K --tokens 1 --seqs 1 > "$W/build-$v.txt" 2>&1
  if [ -f "$W/ptx-$v.tensor" ]; then
    # (the driver's binary ends in a NUL, which ptxas refuses)
    tr -d '\000' < "$W/ptx-$v.tensor" > "$W/$v.ptx"
    ptxas -arch=sm_90 "$W/$v.ptx" -o "$W/$v.cubin" > "$W/ptxas-$v.txt" 2>&1 && cuobjdump -sass "$W/$v.cubin" > "$W/sass-$v.txt" 2>&1
    for k in tc_decode_8 tc_decode_4 tc_decode_o8 tc_decode_o4; do
      awk -v k="$k" '/Function : /{f = index($0, k) && !index($0, k "x")} f' "$W/sass-$v.txt" |
        grep -oE '^ +/\*[0-9a-f]+\*/ +[@!A-Z0-9_.]+( [A-Z0-9_.]+)?' | awk '{o = $2; if (o ~ /^@/) o = $3; sub(/\..*/, "", o); n[o]++; t++} END {for (o in n) print n[o], o; print t+0, "TOTAL"}' |
        sort -rn > "$W/ops-$v-$k.txt"
    done
  fi
  rm -f "$W"/ptx-$v* "$W/$v.cubin"; gzip -f "$W/$v.ptx" "$W/sass-$v.txt" 2>/dev/null
done
use $LAST
(echo "== test_host_opencl, $LAST"; timeout 120 build/tests/test_host_opencl; echo "rc $? at ${SECONDS} s") > "$W/host-opencl.txt" 2>&1
(echo "== test_backends opencl (${TESTS:=attention_agrees,paged_and_options_agree,sparse_v_counts}), $LAST"
 TKV_TESTS=$TESTS timeout 300 build/tests/test_backends opencl; echo "rc $? at ${SECONDS} s") > "$W/conformance.txt" 2>&1
[ "${TILES:-1}" = 1 ] && (echo "== TURBO_OCL_MIN_TILES=4 test_backends opencl (attention_agrees,paged_and_options_agree), $LAST"
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
for v in ${SHAPES:-v0 $LAST}; do
  [ $SECONDS -lt ${SHAPES_UNTIL:-330} ] || break
  use $v
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=10 turbokv bench --backend opencl --types turbo3 --ctx 4K,16K,128K"
   TURBO_OCL_KERNEL_NS=1 TURBO_OCL_REPEAT=10 timeout 120 build/tools/turbokv bench --backend opencl --types turbo3 --ctx 4K,16K,128K; echo "rc $? at ${SECONDS} s") >> "$W/shapes-$v.txt" 2>&1
done
for v in ${PERTOKEN:-p25 v0 $LAST}; do
  [ $v = none ] && continue
  use $v
  # (TURBO_OCL_KERNEL_NS=1: the per-call attentions' device_ns, the bench's
  # "attn device us", is the kernel alone, as issue 12's ratio wants)
  (echo "== ($v) TURBO_OCL_KERNEL_NS=1 turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300"
   TURBO_OCL_KERNEL_NS=1 timeout 150 build/tools/turbokv bench --backend opencl --per-token --types turbo3,turbo3o --ctx 4K,128K --layers 32 --warm-ms 300; echo "rc $? at ${SECONDS} s") >> "$W/per-token.txt" 2>&1
done
use $LAST
if [ -f build/muts/clprof.so ]; then
  # the device time of each command of the per-token mode (clprof.c)
  for c in ${PROF_CTX-4K 128K}; do
    (echo "== ($LAST) LD_PRELOAD=clprof.so turbokv bench --backend opencl --per-token --types turbo3 --ctx $c --layers 32"
     LD_PRELOAD=$R/build/muts/clprof.so timeout 100 build/tools/turbokv bench --backend opencl --per-token --types turbo3 --ctx $c --layers 32; echo "rc $? at ${SECONDS} s") >> "$W/prof.txt" 2>&1
  done
fi
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
for f in "$W"/ops-*; do grep -q "^0 TOTAL" $f && continue; echo "$(basename $f): $(grep TOTAL $f) $(grep -E ' (LDS|IADD3|LOP3|SHF|MUFU|HMMA)$' $f | tr '\n' ' ')"; done
grep -h -B1 -A3 "tc_decode" "$W"/build-*.txt | grep -i "used\|spill" | head -8
grep -v "^ *$\|warning generated" "$W/conformance.txt" | tail -6
grep -v "^ *$\|warning generated" "$W/conformance-tiles.txt" | tail -4
grep -v "^ *$" "$W/host-opencl.txt" | tail -4
for f in "$W"/mutant-*.txt; do [ -f "$f" ] && head -1 "$f" && grep -i "relative error\|FAILED\|rc " "$f" | tail -4; done
for v in $VARIANTS; do echo "== $v"; grep -A4 "^device time" "$W/bench-$v.txt" | grep -v "^--"; grep -i "error\|rc " "$W/bench-$v.txt" | tail -2; done
grep "V rows skipped" -A2 "$W/bench-$LAST.txt" | head -6
for f in "$W"/shapes-*.txt; do [ -f "$f" ] && echo "== $f" && grep -A12 "^device time" "$f" | grep -v "^--" | head -14; done
[ -f "$W/per-token.txt" ] && grep "^==\|^turbo" "$W/per-token.txt"
[ -f "$W/trace-summary.txt" ] && tail -14 "$W/trace-summary.txt"
[ -f "$W/prof.txt" ] && grep "^==\|^turbo3 \|clprof" "$W/prof.txt"
[ -f "$W/sdpa.txt" ] && tail -4 "$W/sdpa.txt"
