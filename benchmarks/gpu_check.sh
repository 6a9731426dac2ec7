#!/usr/bin/env bash
# One prepared check for a CUDA machine without internet: install the wheels in .whl/,
# check that CUDA graphs work here (benchmarks/graph_probe.py), run the test suite on
# cupy + numpy, then the throughput benchmark (A–E; bpx on cupy and numpy, the PyTorch peer
# on CUDA and CPU, the GEMM bounds), bpx[cupy] once more without graphs on D, C and B64, D's
# fused SGD step and kept graphs on and off (paired.py), D's fixed vs per-step cost
# (epoch_split.py) and D's kernels by time (kernel_profile.py), and print a summary last.
#
#   usage: benchmarks/gpu_check.sh OUTDIR        (run from anywhere; it cd's to the repo root)
#
# Expects python3 with numpy, cupy, torch (CUDA), pytest, hypothesis; array-api-compat and
# array-api-strict come as wheels in .whl/ at the repo root. bpx is imported from the
# checkout (PYTHONPATH), not installed.
#
# Time: every stage has a cap (GPU_TEST_TIMEOUT, BENCH_TIMEOUT, ...) and is also cut so that
# the whole run ends DEADLINE s (480) after it started; a stage with under 15 s left is
# skipped. Stages run in the order of what matters most: the GPU test files, the benchmark,
# D in detail, the rest of the test suite, the run without graphs. A cut stage gets SIGINT
# first, so pytest still prints its summary and bench.py writes the workloads it finished.
# BENCH_EXTRA="--quick" appends options to the benchmark's command line; BENCH_BACKENDS=cupy
# leaves out the CPU rows (a re-run after a change to the CuPy path). The summary is printed
# last and kept in OUTDIR/summary.txt.
set -u

OUT="${1:?usage: benchmarks/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.." || exit 2
T0=$(date +%s)
DEADLINE="${DEADLINE:-480}"
GPU_TEST_TIMEOUT="${GPU_TEST_TIMEOUT:-90}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-230}"
DETAIL_TIMEOUT="${DETAIL_TIMEOUT:-45}"
TEST_TIMEOUT="${TEST_TIMEOUT:-150}"
ABLATION_TIMEOUT="${ABLATION_TIMEOUT:-45}"
BENCH_BACKENDS="${BENCH_BACKENDS:-cupy,numpy}"
exec 3>&1  # the script's own output: log lines go there, not into a stage's piped log
log() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/gpu_check.log" >&3; }
# capped CAP LABEL COMMAND...: run COMMAND under `timeout`, cut at CAP s or at what is left
# before DEADLINE, whichever comes first (SIGINT, then KILL 15 s later); skipped, with exit
# status 124, when under 15 s are left (`timeout 0` would mean no limit at all)
capped() {
    local cap=$1 label=$2 left
    shift 2
    left=$(( DEADLINE - ($(date +%s) - T0) ))
    if [ "$left" -lt 15 ]; then
        log "$label: skipped, ${left}s left before the ${DEADLINE}s deadline"
        return 124
    fi
    [ "$left" -lt "$cap" ] && cap=$left
    log "$label (cut at ${cap}s)"
    timeout -s INT -k 15 "$cap" "$@"
}
# cut_note RC: what a stage's exit status says about its end (124: cut or skipped; 137: it
# outlived the SIGINT and was killed)
cut_note() { case "$1" in 124) echo " (cut or skipped)" ;; 137) echo " (killed after the cut)" ;; esac; }

log "repo $(pwd); output $OUT"

# --- dependencies from .whl/ (no index, no internet) -------------------------------------
rm -rf /tmp/site
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        > "$OUT/pip.log" 2>&1
    PIP_RC=$?
    if [ "$PIP_RC" != 0 ]; then  # no usable pip: the wheels are pure-Python zip files
        for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done >> "$OUT/pip.log" 2>&1
        PIP_RC="$PIP_RC, then zipfile extraction exit $?"
    fi
    log "pip install of $(ls .whl/*.whl | wc -l) wheel(s): exit $PIP_RC (see pip.log)"
else
    log "warning: no wheels in .whl/; array-api-compat must already be importable"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_PLATFORMS=cpu  # a CUDA jaxlib would take 75 % of the GPU's memory in the tests
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1  # a stage cut at its limit keeps everything it printed
unset CUPY_TF32 NVIDIA_TF32_OVERRIDE  # full float32 products (the benchmark also turns TF32 off)

# --- the machine -------------------------------------------------------------------------
{ nvidia-smi; echo; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,utilization.gpu --format=csv; } \
    > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1
python3 - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, sys
print("python", sys.version)
print("platform", platform.platform())
for mod in ("numpy", "cupy", "torch", "jax", "sklearn", "array_api_compat", "array_api_strict",
            "pytest", "hypothesis", "bpx"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as exc:
        print(mod, "NOT IMPORTABLE:", type(exc).__name__, exc)
try:
    import bpx
    for k, v in bpx.available().items():
        print("bpx backend", k, v)
except Exception as exc:
    print("bpx.available() failed:", type(exc).__name__, exc)
EOF
log "$(grep -E '^(cupy|torch|bpx backend cupy)' "$OUT/env.txt" | tr '\n' ';')"

# --- CUDA graphs: usable here? (own process; if not, the benchmark runs without them) -------
timeout 60 python3 benchmarks/graph_probe.py > "$OUT/graph_probe.log" 2>&1
PROBE_RC=$?
log "graph probe exit $PROBE_RC: $(tail -n 2 "$OUT/graph_probe.log" | tr '\n' ' ')"
BENCH_GRAPHS=1
if [ "$PROBE_RC" != 0 ]; then
    BENCH_GRAPHS=0
    log "the benchmark will run WITHOUT CUDA graphs (BPX_CUPY_GRAPHS=0); the tests with them"
fi

# --- the GPU test files first (a failure does not stop the script) ------------------------
GPU_FILES="tests/test_cublas.py tests/test_step_graphs.py tests/test_backend.py tests/test_training.py"
# shellcheck disable=SC2086
capped "$GPU_TEST_TIMEOUT" "pytest, GPU files (BPX_TEST_BACKENDS=cupy,numpy)" \
    env BPX_TEST_BACKENDS=cupy,numpy python3 -m pytest $GPU_FILES -q -p no:cacheprovider \
    2>&1 | tee "$OUT/tests-gpu.log" | tail -n 25
GPU_TEST_RC=${PIPESTATUS[0]}
echo "$GPU_TEST_RC" > "$OUT/tests-gpu.rc"
log "pytest, GPU files: exit $GPU_TEST_RC$(cut_note "$GPU_TEST_RC")"

# --- benchmark -----------------------------------------------------------------------------
# --in-process --warmup 0: the worker-process mode has not run on a GPU machine yet; run 3
# (H200) measured this way, with one warm-up epoch
capped "$BENCH_TIMEOUT" "benchmark" env BPX_CUPY_GRAPHS=$BENCH_GRAPHS python3 benchmarks/bench.py \
    --workloads A,B64,B1024,C,D,E --backends "$BENCH_BACKENDS" --no-sklearn \
    --gpu-samples 61440 --repeats 7 --budget 20 --cpu-memory-workloads A --in-process --warmup 0 \
    --label gpu --out "$OUT/bench" --overwrite ${BENCH_EXTRA:-} > "$OUT/bench.log" 2>&1
BENCH_RC=$?
echo "$BENCH_RC" > "$OUT/bench.rc"
log "benchmark exit code $BENCH_RC$(cut_note "$BENCH_RC")"

# --- D in detail: fast paths on and off (paired), fixed vs per-step cost, kernels -----------
capped "$DETAIL_TIMEOUT" "paired D: fused descent (cuBLAS beta = 1) on/off" \
    env BPX_CUPY_GRAPHS=$BENCH_GRAPHS python3 benchmarks/paired.py \
    --backend cupy --workload D --off fuses_descent --pairs 8 > "$OUT/paired-D.log" 2>&1
log "paired D: exit $?"
capped "$DETAIL_TIMEOUT" "paired D: kept graphs on/off (off: a capture per epoch)" \
    env BPX_CUPY_GRAPHS=$BENCH_GRAPHS python3 benchmarks/paired.py \
    --backend cupy --workload D --off keeps_step_graphs --pairs 8 > "$OUT/paired-D-kept.log" 2>&1
log "paired D, kept graphs: exit $?"
capped "$DETAIL_TIMEOUT" "epoch split D: fixed cost per epoch vs per step" \
    env BPX_CUPY_GRAPHS=$BENCH_GRAPHS python3 benchmarks/epoch_split.py \
    --backend cupy --workload D > "$OUT/epoch-split-D.log" 2>&1
log "epoch split D: exit $?"
capped "$DETAIL_TIMEOUT" "kernel profile D (torch.profiler)" \
    env BPX_CUPY_GRAPHS=$BENCH_GRAPHS python3 benchmarks/kernel_profile.py \
    --workload D > "$OUT/kernel-profile-D.log" 2>&1
log "kernel profile D: exit $?"

# --- the rest of the test suite on cupy + numpy ----------------------------------------------
# shellcheck disable=SC2046
capped "$TEST_TIMEOUT" "pytest, the other files (BPX_TEST_BACKENDS=cupy,numpy)" \
    env BPX_TEST_BACKENDS=cupy,numpy python3 -m pytest tests -q -p no:cacheprovider \
    --durations=15 $(for f in $GPU_FILES; do printf -- '--ignore=%s ' "$f"; done) \
    2>&1 | tee "$OUT/tests-cupy.log" | tail -n 25
TEST_RC=${PIPESTATUS[0]}
echo "$TEST_RC" > "$OUT/tests-cupy.rc"
log "pytest, the other files: exit $TEST_RC$(cut_note "$TEST_RC")"

# --- the same bpx[cupy] rows without CUDA graphs: what the captured steps are worth -----------
capped "$ABLATION_TIMEOUT" "benchmark without CUDA graphs (BPX_CUPY_GRAPHS=0; D, C, B64)" \
    env BPX_CUPY_GRAPHS=0 python3 benchmarks/bench.py \
    --workloads D,C,B64 --backends cupy --no-torch --no-sklearn --no-memory \
    --gpu-samples 61440 --repeats 5 --budget 9 --in-process --warmup 0 --label gpu-nographs \
    --out "$OUT/bench-nographs" --overwrite \
    > "$OUT/bench-nographs.log" 2>&1
log "benchmark without graphs: exit $?"
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv >> "$OUT/nvidia-smi.txt" 2>&1

# --- summary, last (also kept in OUT/summary.txt) -------------------------------------------
summary() {
echo
echo "===== summary ($(( $(date +%s) - T0 )) s) ====="
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
echo "tests, GPU files (cupy,numpy): exit $GPU_TEST_RC — $(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/tests-gpu.log" | tail -n 1)"
echo "tests, other files (cupy,numpy): exit $TEST_RC — $(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/tests-cupy.log" | tail -n 1)"
echo "graph probe: exit $PROBE_RC ($(grep -E '^graph' "$OUT/graph_probe.log" | tr '\n' ' '))"
echo "benchmark: exit $BENCH_RC"
if [ -f "$OUT/bench/results.json" ]; then
    python3 - "$OUT/bench/results.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def f(x, k="median", p=2):
    return "-" if not x else f"{x[k]:.{p}f}"
print(f"{'wl':6}{'impl':13}{'device':8}{'samples/s':>12}{'min':>11}{'max':>11}{'peakMB':>8}"
      f"{'xPT':>6}{'xGEMM':>7}")
for r in d["results"]:
    if r.get("error"):
        print(f"{r['workload']:6}{r['impl']:13}{r['device']:8} error: {r['error'][:60]}")
        continue
    s = r["samples_per_s"]
    mem = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
    print(f"{r['workload']:6}{r['impl']:13}{r['device']:8}{s['median']:12,.0f}{s['min']:11,.0f}"
          f"{s['max']:11,.0f}{mem:>8}{f(r.get('x_pytorch')):>6}{f(r.get('x_gemm')):>7}")
    fast = {k: v for k, v in (r.get("fast_paths") or {}).items() if v}
    if fast:  # graph replays, or why a fast path was not taken
        print(f"{'':27}{fast}")
t = d.get("targets", [])
print(f"targets met: {sum(bool(x['pass']) for x in t)} of "
      f"{sum(x['pass'] is not None for x in t)} measured")
for x in t:
    v = "not measured" if x["value"] is None else f"{x['value']:.3f}"
    ok = {None: "", True: "pass", False: "MISS"}[x["pass"]]
    print(f"  {x['workload']:6}{x['impl']:11}{x['device']:8}{x['target']}: {v} {ok}")
for n in d.get("notes", []):
    print("note:", n)
print(f"bench wall {d['wall_seconds']:.0f} s; tf32 {d['machine'].get('tf32')}")
EOF
else
    echo "no results.json; last lines of bench.log:"
    tail -n 15 "$OUT/bench.log"
fi
echo "D, fused descent on/off:"; tail -n 3 "$OUT/paired-D.log"
echo "D, kept graphs on/off:"; tail -n 3 "$OUT/paired-D-kept.log"
echo "D, epoch split:"; tail -n 6 "$OUT/epoch-split-D.log"
echo "D, kernels:"; head -n 16 "$OUT/kernel-profile-D.log"
echo "without CUDA graphs (BPX_CUPY_GRAPHS=0):"
grep -E '^\| (D|C|B64) \| (bpx|gemm)' "$OUT/bench-nographs/results.md" 2>/dev/null \
    || tail -n 5 "$OUT/bench-nographs.log"
}
summary 2>&1 | tee "$OUT/summary.txt"
