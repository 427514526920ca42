#!/usr/bin/env bash
# The device check, in one call on a fresh machine with an NVIDIA GPU: install the project, run the
# tests marked `cuda`, `pipeline bench`, and the timed `mnist-sweep` and `mnist-sweep-gpu` runs.
# Everything it prints and writes goes under one folder (summary.txt first). It keeps to a time
# limit (9 minutes by default): a sweep still running at the limit is stopped, and the summary
# says how many of its stages were done; running the script again resumes it from its cache.
#
#   bash benchmarks/device_check.sh [--device cuda|cpu] [--out DIR] [--minutes N] [--jobs N]
#
# `--device cpu` runs the same steps on a CPU (the cuda tests are skipped, with their reason).
set -uo pipefail

device=cuda
out=device-check
minutes=9
jobs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "device_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$device" in
    cuda|cpu) ;;
    *) echo "device_check: --device must be cuda or cpu, not $device" >&2; exit 2 ;;
esac
if [ -z "$jobs" ]; then
    if [ "$device" = cuda ]; then jobs=8; else jobs=$(( $(nproc) < 8 ? $(nproc) : 8 )); fi
fi

cd "$(dirname "$0")/.."
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python="${PYTHON:-python3}"
start=$(date +%s)
summary="$out/summary.txt"
: > "$summary"

say() { echo "$*" | tee -a "$summary"; }
left() { echo $(( minutes * 60 - ($(date +%s) - start) )); }

# step NAME COMMAND...: run it with its output in NAME.log; its status and seconds in the summary
step() {
    local name="$1" t0 rc
    shift
    t0=$(date +%s)
    echo "== $name: $*"
    "$@" > "$out/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc, $(( $(date +%s) - t0 )) s"
    return $rc
}

say "device_check --device $device --jobs $jobs --minutes $minutes, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(nproc) CPUs, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
if command -v nvidia-smi > /dev/null; then
    say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
fi

# 1. install: offline when the dependencies are there already, else from the package index
if "$python" -c "import torch, torchvision, typer, rich, tensorboard, safetensors, fontTools, matplotlib, PIL, pytest" 2> /dev/null; then
    step install "$python" -m pip install --no-deps --no-build-isolation -e .
else
    step install "$python" -m pip install -e ".[dev]"
fi || { say "install failed: see $out/install.log"; exit 1; }
say "$("$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"

# 2. the tests marked cuda (skipped, with the reason, where torch sees no GPU)
step cuda-tests "$python" -m pytest -q -rs -m cuda tests
tail -n 5 "$out/cuda-tests.log" | sed 's/^/  /' | tee -a "$summary"

# 3. the bench table
step bench "$python" -m pipeline bench --device "$device" --json "$out/bench.json" \
    --markdown "$out/bench.md"
[ -f "$out/bench.md" ] && tee -a "$summary" < "$out/bench.md"

# 4. the timed sweeps, each given what is left of the time limit
for exp in mnist-sweep mnist-sweep-gpu; do
    limit=$(( $(left) - 15 ))  # room to stop it and write the summary
    if [ "$limit" -lt 30 ]; then
        say "$exp: not started, the time limit is reached"
        continue
    fi
    step "$exp" timeout --signal=TERM --kill-after=20 "$limit" \
        "$python" -m pipeline run "$exp" --device "$device" --jobs "$jobs" --workdir "$out/$exp"
    rc=$?
    [ "$rc" -eq 124 ] && say "$exp: stopped at the time limit ($limit s); run the script again to resume"
    done_line=$("$python" -m pipeline status "$exp" --workdir "$out/$exp" 2> /dev/null | tail -n 1)
    say "$exp: $done_line"
    if [ -f "$out/$exp/summary.csv" ]; then
        say "$exp: MNIST test error (mean over seeds):"
        awk -F, 'NR > 1 {print "  " $1 " b" $2 ": " $4}' "$out/$exp/summary.csv" | tee -a "$summary"
    fi
done
say "device_check: $(( $(date +%s) - start )) s in all; logs and figures in $out"
