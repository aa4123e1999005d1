#!/usr/bin/env bash
# The first job on a lent GPU (issue 15): one device call of at most 6 minutes (the step timeouts below add
# up to 360 s; a device call may run 10), in order of value, every result written as soon as it exists:
#   1. layout probes: the one-warp mma.sp test and, on Hopper, the one-warpgroup wgmma.sp test (B at the
#      1024-aligned base and at +512 / +12800 bytes) against the CPU emulators,
#   2. every kernel family against the reference, each in its own pytest process with its own timeout
#      (never -x: a failure in one case hides nothing else), after one process has compiled every family
#      into the disk cache (later processes load the cubins, NVRTC does not run again),
#   3. compute-sanitizer memcheck, racecheck and synccheck on one small case per path (skipped, with the
#      tool's own words, when it is absent or refuses the device),
#   4. the trimmed `samoyeds-lab bench kernels` (Mixtral-8x7B w1 and w2, bf16 and fp16, 1/8/64/1024/4096
#      tokens); the bench appends each record to its JSON as it goes and survives a failing config.
# Run from the repository root on a machine whose python3 has torch + CuPy (the device image does):
#   OUT=/some/dir bash scripts/gpu_validate.sh        (BENCH_MODELS / BENCH_TOKENS change the sweep)
# STEPS picks steps by name or group: env | layout | kernels (compile + the families) | sanitizer (memcheck,
# racecheck, synccheck) | bench, e.g. STEPS="layout kernels" or STEPS=memcheck; default: all of them.
# Everything goes to $OUT (default build/gpu): one log per step, junit XML per family, summary.txt rewritten
# after every step; the last lines printed are the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export SAMOYEDS_LAB_CACHE=${SAMOYEDS_LAB_CACHE:-$OUT/cache}  # the cubins the families share
PY=${PYTHON:-python3}
STEPS=${STEPS:-env layout kernels sanitizer bench}
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m gpu)

# name group timeout_s: the whole budget, in the order the steps run (sum <= 360, checked by the CI test)
PLAN=(
  "env            env        20"
  "layout         layout     30"
  "compile        kernels    45"
  "spmm_dense     kernels    30"
  "ssmm           kernels    45"
  "grouped        kernels    15"
  "cases          kernels    25"
  "memcheck       sanitizer  25"
  "racecheck      sanitizer  25"
  "synccheck      sanitizer  20"
  "bench          bench      80"
)
declare -A LIMIT GROUP
for row in "${PLAN[@]}"; do read -r n g t <<<"$row"; LIMIT[$n]=$t; GROUP[$n]=$g; done
summary=()
t_start=$SECONDS

write_summary() {
  { echo "== steps (logs in $OUT; $((SECONDS - t_start)) s so far)"; printf '%s\n' "${summary[@]}"; } >"$OUT/summary.txt"
}
wanted() { case " $STEPS " in *" $1 "* | *" ${GROUP[$1]} "*) return 0 ;; esac; return 1; }
step() {  # step NAME CMD...: run under its timeout, log to $OUT/NAME.log, record the outcome at once
  local name=$1; shift
  wanted "$name" || return 0
  local t0=$SECONDS rc status
  timeout -k 5 "${LIMIT[$name]}" bash -c '"$@"' _ "$@" >"$OUT/$name.log" 2>&1  # bash -c: steps may be functions
  rc=$?
  case $rc in
    0) status=ok; grep -q '^skipped:' "$OUT/$name.log" && status=skipped ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  summary+=("$(printf '%-11s %-8s rc=%-3s %3ss/%-3ss %s' "$name" "$status" "$rc" "$((SECONDS - t0))" \
    "${LIMIT[$name]}" "$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-110)")")
  write_summary
  return 0
}

env_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1
  "$PY" -m samoyeds_lab.cli doctor
}

compile_all() {  # every family for this GPU's architecture, into the disk cache the later steps read
  "$PY" - <<'EOF'
import sys
from samoyeds_lab.kernels import available
from samoyeds_lab.kernels.build import SOURCES, cache_stats, compile_source, device_arch, nvrtc_provider
if not available():
    from samoyeds_lab.kernels.ops import _unavailable_reason
    print(f"skipped: no GPU to compile for ({_unavailable_reason()})")
    sys.exit(0)
from concurrent.futures import ThreadPoolExecutor
arch = device_arch()
from dataclasses import replace
import torch
from samoyeds_lab.kernels import decode, prefill
name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
dec = {decode.default_config(t, None, name) for t in (8, 16)}  # the decode defaults: plain 2:4 builds ...
dec |= {replace(c, sel_n=1, sel_m=2) for c in dec}  # ... and Samoyeds 1:2 builds
jobs = [(f"{n}.cu", lambda n=n: compile_source(n, arch)) for n in SOURCES]
jobs += [(f"ssmm_decode {decode.module_name(c)}", lambda c=c: decode.compile_config(c, arch)) for c in sorted(dec, key=str)]
if arch == "90a":
    jobs.append(("ssmm_prefill_sm90 default", lambda: prefill.compile_prefill(prefill.DEFAULT_CONFIG, arch)))
with ThreadPoolExecutor(min(8, len(jobs))) as pool:  # one NVRTC child process per build, side by side
    for (what, _), res in zip(jobs, pool.map(lambda j: j[1](), jobs)):
        print(f"{what} sm_{arch}: {len(res.cubin)} B cubin -> {res.cache_path}")
print(f"NVRTC {nvrtc_provider()}: {cache_stats()}")
EOF
}

# One small case per path (mma.sp and, on Hopper, wgmma.sp ssmm with split-K and a 16-bit scatter-add, and the
# Hopper prefill kernel; spmm; dense_mm), run under each compute-sanitizer tool.
cat >"$OUT/sanitize_case.py" <<'EOF'
import sys
import torch
from samoyeds_lab import kernels as K
from samoyeds_lab.formats import compress_nm, compress_samoyeds
if not K.available():
    from samoyeds_lab.kernels.ops import _unavailable_reason
    print(f"skipped: no GPU ({_unavailable_reason()})")
    sys.exit(0)
from samoyeds_lab.kernels.build import device_arch
g = torch.Generator().manual_seed(0)
d = torch.randn(64, 128, generator=g).half()
d = d * (torch.rand(64, 32, 4, generator=g).argsort(-1) < 2).reshape(64, 128)  # 2:4 along K
w24 = compress_nm(d.cuda())
ws = compress_samoyeds((d * (torch.arange(64) % 2 == 0)[:, None]).cuda(), 1, 2, 32)
x = torch.randn(9, 128, generator=g).half().cuda()
idx = torch.tensor([0, 3, -1, 8, 2], dtype=torch.int32).cuda()
paths = ["mma_sp"] + (["wgmma_sp"] if device_arch() == "90a" else [])
for kernel in paths:
    for w in (w24, ws):
        for split_k in (1, 2):
            K.ssmm(w, x, idx, split_k=split_k, backend="cupy", kernel=kernel)
            out = torch.zeros(9, 64, dtype=torch.float16, device="cuda")
            K.ssmm(w, x, idx, epilogue="scatter_add", out=out, scatter_idx=idx, split_k=split_k, backend="cupy",
                   kernel=kernel)
if device_arch() == "90a":  # the prefill kernel: producer / consumer warpgroups on mbarriers (no split-K)
    for w in (w24, ws):
        K.ssmm(w, x, idx, backend="cupy", kernel="wgmma_prefill")
        out = torch.zeros(9, 64, dtype=torch.float16, device="cuda")
        K.ssmm(w, x, idx, epilogue="scatter_add", out=out, scatter_idx=idx, backend="cupy", kernel="wgmma_prefill")
    paths.append("wgmma_prefill")
K.spmm(w24, x, backend="cupy")
K.dense_mm(w24.to_dense(), x, idx, backend="cupy")
torch.cuda.synchronize()
print("ran ssmm (" + ", ".join(paths) + "), spmm, dense_mm")
EOF

sanitize() {  # sanitize TOOL: skip with the tool's words when it is absent or refuses the device
  local tool=$1 log="$OUT/sanitizer-$1.txt" rc
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    echo "skipped: compute-sanitizer not on PATH"; return 0
  fi
  compute-sanitizer --tool "$tool" --error-exitcode 3 "$PY" "$OUT/sanitize_case.py" >"$log" 2>&1
  rc=$?
  cat "$log"
  if grep -qiE "device not supported|error 999|unable to find injection|not supported on this|injection failed" "$log"; then
    echo "skipped: compute-sanitizer refused: $(grep -iE -m1 "device not supported|error 999|unable to find injection|not supported on this|injection failed" "$log" | cut -c1-160)"
    return 0
  fi
  [ "$rc" -eq 0 ] && { echo "$tool: clean (exit 0)"; return 0; }
  echo "$tool: exit $rc (3: the tool found errors, see $log)"
  return "$rc"
}

export PY OUT
export -f env_info compile_all sanitize
step env env_info
step layout "${PYTEST[@]}" tests/kernels/test_ops.py tests/kernels/test_gpu_cases.py \
  -k "one_warp or one_warpgroup or ldmatrix or wgmma_probe" --junitxml="$OUT/layout.xml"
step compile compile_all
step spmm_dense "${PYTEST[@]}" tests/kernels/test_ops.py -k "gpu_spmm_and_dense" --junitxml="$OUT/spmm_dense.xml"
step ssmm "${PYTEST[@]}" tests/kernels/test_ops.py tests/kernels/test_decode.py tests/kernels/test_prefill_sm90.py -k "test_gpu_ssmm" --junitxml="$OUT/ssmm.xml"
step grouped "${PYTEST[@]}" tests/kernels/test_ops.py -k "gpu_grouped" --junitxml="$OUT/grouped.xml"
step cases "${PYTEST[@]}" tests/kernels/test_gpu_cases.py -k "not wgmma_probe" --junitxml="$OUT/cases.xml"
step memcheck sanitize memcheck
step racecheck sanitize racecheck
step synccheck sanitize synccheck
# shellcheck disable=SC2086
step bench "$PY" -m samoyeds_lab.cli bench kernels --models ${BENCH_MODELS:-Mixtral-8x7B} --projections w1 w2 \
  --dtypes bfloat16 float16 --tokens ${BENCH_TOKENS:-1 8 64 1024 4096} --batches 3 --calls 10 --warmup 2 \
  --out "$OUT/gpu_kernels.json"

echo "== environment"; grep -vE '^\s*$' "$OUT/env.log" | head -4
write_summary
cat "$OUT/summary.txt"
