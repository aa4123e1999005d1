#!/usr/bin/env bash
# The first job on a lent GPU (issue 7), prepared so that one device call does it all, in order of value:
#   1. the one-warp mma.sp fragment/metadata layout test against the CPU emulator (settles the layouts) and,
#      on Hopper, the one-warpgroup wgmma.sp test (fragments, metadata, descriptor, 64-byte swizzle),
#   2. every kernel against the reference (-m gpu tests/kernels: awkward shapes, both dtypes, empty and
#      padded experts, every epilogue, grouped, split-K),
#   3. compute-sanitizer memcheck on a small case (where the runtime supports it),
#   4. `samoyeds-lab bench kernels` at decode and prefill token counts (records: device, driver, versions;
#      on Hopper also op ssmm_wg against baseline ssmm: the measurement kernel="auto" decides from).
# Run from the repository root on a machine whose python3 has torch + CuPy (the device image does):
#   OUT=/some/dir bash scripts/gpu_validate.sh            (BENCH_MODELS / BENCH_TOKENS to change the sweep)
# A lent device runs one command for at most 10 minutes: split the job with STEPS, e.g.
#   STEPS="layout kernels memcheck" bash scripts/gpu_validate.sh   then   STEPS=bench bash scripts/gpu_validate.sh
# Everything goes to $OUT (default build/gpu); the last lines printed are a short summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
summary=()
STEPS=${STEPS:-layout kernels memcheck bench}
step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, remember the outcome (only the STEPS named)
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-10s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$OUT/$name.log" | cut -c1-110)")")
  return $rc
}

{ nvidia-smi; $PY -c "import torch, cupy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cupy', cupy.__version__)"; \
  $PY -m samoyeds_lab.cli doctor; } >"$OUT/env.log" 2>&1
step layout 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels -k "one_warp or ldmatrix" -x
step kernels 420 $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels -x --junitxml="$OUT/kernels.xml"
step memcheck 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels -k sanitizer
# shellcheck disable=SC2086
step bench 600 $PY -m samoyeds_lab.cli bench kernels --models ${BENCH_MODELS:-Mixtral-8x7B Qwen2-MoE-57B-A14B} \
  --tokens ${BENCH_TOKENS:-1 16 64 1024 4096} --out "$OUT/gpu_kernels.json"

echo "== environment"; grep -E "NVIDIA H|Driver Version|^torch|backend" "$OUT/env.log" | head -5
echo "== steps (logs in $OUT)"; printf '%s\n' "${summary[@]}"
