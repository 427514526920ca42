#!/usr/bin/env bash
# The sweep's classify cells one by one and in groups, timed on this machine: everything upstream
# of the cells is built first (not timed), then the cells run with `classifier.group = 1`, then
# with `classifier.group = N` (a group's cells trained at once as one model). Each cell's test
# error both ways is compared at the end. Prints a markdown table; logs go to the workspace.
#
#   bash benchmarks/cells_groups.sh [--workdir DIR] [--group N] [--jobs N] [--device cpu|cuda]
#                                   [--set KEY=VALUE ...]
#
# The default cells are the 72 of six mixtures that need no refiner (real, font, tone, real+font,
# real+tone, real+composite over the sweep's 4 budgets and 3 seeds): a `gan` cell trains the same
# network for the same steps on other images, so it costs what a `font` cell costs. Run it alone
# on the machine (anything else running shares its cores), in a fresh workspace: a cached cell is
# not run again.
set -uo pipefail

workdir=runs/cells-groups
group=9
jobs=2
device=cpu
sets=(--set 'experiment.mixtures=["real","font","tone","real+font","real+tone","real+composite"]')
while [ $# -gt 0 ]; do
    case "$1" in
        --workdir) workdir="$2"; shift 2 ;;
        --group) group="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "cells_groups: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ -d "$workdir/cache/classify" ]; then
    echo "cells_groups: $workdir already holds classify cells; give a fresh --workdir" >&2; exit 2
fi
mkdir -p "$workdir"
run() { "$python" -m pipeline run mnist-sweep --workdir "$workdir" --jobs "$jobs" --device "$device" \
        "${sets[@]}" "$@"; }

echo "upstream of the cells (not timed) ..."
run --only mnist --only split --only render_fonts --only 'render_composites/*' --only oracle \
    --only 'budget/*' --only 'tone/*' > "$workdir/upstream.log" 2>&1 \
    || { echo "cells_groups: the upstream stages failed, see $workdir/upstream.log" >&2; exit 1; }

declare -A wall
for g in 1 "$group"; do
    echo "cells with classifier.group = $g ..."
    t0=$(date +%s.%N)
    run --set "classifier.group=$g" --only 'classify/*' > "$workdir/group$g.log" 2>&1 \
        || { echo "cells_groups: the run with group $g failed, see $workdir/group$g.log" >&2; exit 1; }
    wall[$g]=$("$python" -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$t0")
done

"$python" - "$workdir" "$group" "$jobs" "$device" "${wall[1]}" "${wall[$group]}" <<'EOF'
import json, sys
from pathlib import Path

workdir, group, jobs, device, one, grouped = sys.argv[1:]
errors = {}  # cell name -> {1: test error one by one, group: test error in its group}
for meta in Path(workdir, "cache", "classify").glob("*/meta.json"):
    m = json.loads(meta.read_text())
    size = len(m.get("group", [])) or 1
    if size in (1, int(group)):
        errors.setdefault(m["name"], {})[size] = m["metrics"]["test_error"]
both = {n: e for n, e in errors.items() if len(e) == 2}
diffs = [abs(e[1] - e[int(group)]) for e in both.values()]
steps = json.loads(next(Path(workdir, "cache", "classify").glob("*/meta.json")).read_text())["params"]["steps"]
print(f"{len(errors)} classify cells of mnist-sweep, {steps} steps each, --jobs {jobs}, --device {device}:\n")
print("| cells | wall time |\n|---|---:|")
print(f"| one by one (`classifier.group = 1`) | {one} s |")
print(f"| in groups of {group} (`classifier.group = {group}`) | {grouped} s |")
if diffs:
    print(f"\nTest error, a cell in its group against the same cell alone: largest difference "
          f"{max(diffs):.4f}, mean {sum(diffs) / len(diffs):.4f}.")
EOF
