#!/usr/bin/env bash
# What pretextlab does on one GPU, in under 8 minutes, with every figure collected into one JSON file:
#   1. CUDA visible: the GPU, torch and CUDA versions;
#   2. `pretextlab bench --quick --device cuda --json`, racing lightly's SimCLR too where lightly imports
#      (or installs, without its dependencies, from a wheel in $WHEELS: nothing that could change torch);
#   3. a smoke study on CUDA, on a small synthetic JPEG folder this script writes;
#   4. a fast-preset study at 10% labels, one pretext task (rotation), one seed;
#   5. the gpu preset's training step (ResNet-18, batch 512) eager and under torch.compile, with the
#      precision (bf16 autocast) and layout (channels_last) that `auto` picks, and the peak GPU memory.
# Every step records its exit code, wall time and peak GPU memory (torch.cuda.max_memory_allocated).
#
# Usage: bash scripts/gpu_check.sh [OUT.json]        (default docs/gpu/gpu-check.json)
# Environment: PYTHON (default .venv/bin/python where it exists, else python3); DEVICE (default cuda;
# DEVICE=cpu runs every step on the CPU, to check the commands); DATA (an image folder for step 4 instead
# of the synthetic one); PER_CLASS (images per class of step 4's synthetic folder, default 500);
# COMPILE_PRESET and COMPILE_STEPS (step 5: default gpu, 20 timed steps); WHEELS (default .whl).
# Without CUDA it says so in one line and exits 0. It exits 1 when a step failed (the JSON still holds
# every step's record). Each step has a time limit: 7 min 50 s in all.

set -uo pipefail
if [[ $# -gt 0 ]]; then OUT_JSON=$(realpath -m "$1"); fi  # as given, from where it was run
cd "$(dirname "$0")/.."  # the repository root
OUT_JSON=${OUT_JSON:-docs/gpu/gpu-check.json}
DEVICE=${DEVICE:-cuda}
PER_CLASS=${PER_CLASS:-500}
COMPILE_STEPS=${COMPILE_STEPS:-20}
COMPILE_PRESET=${COMPILE_PRESET:-gpu}
WHEELS=${WHEELS:-.whl}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's pretextlab, not installed
export PYTHONUNBUFFERED=1

# 1. CUDA visible
if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to $PYTHON (or it cannot import torch): nothing to check"
    exit 0
fi

WORK=$(mktemp -d -t pretextlab-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export PRETEXTLAB_CACHE="$WORK/cache"  # decoded datasets: kept out of the user's cache
"$PYTHON" - "$WORK/cuda.json" <<'EOF'
import json, sys

import torch

info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
                bf16=torch.cuda.is_bf16_supported())
json.dump(info, open(sys.argv[1], "w"))
print(f"gpu_check: {info.get('device', 'no GPU')} (torch {info['torch']}, CUDA {info['cuda']})")
EOF

# Runs one pretextlab command in-process, as `pretextlab ARGS` would, and records how it ended.
cat > "$WORK/step.py" <<'EOF'
import json, sys, time, traceback

import torch

from pretextlab import cli

record, args = sys.argv[1], sys.argv[2:]
sys.argv = ["pretextlab", *args]
t0 = time.perf_counter()
try:
    cli.main()
    rc = 0
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except Exception:
    traceback.print_exc()
    rc = 1
peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
json.dump({"command": "pretextlab " + " ".join(args), "rc": rc, "wall_s": time.perf_counter() - t0,
           "cuda_max_memory_allocated_mib": peak}, open(record, "w"))
print(f"gpu_check: pretextlab {args[0]} exit {rc} after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
EOF

step() {  # step NAME SECONDS ARGS...: `pretextlab ARGS` with a time limit, recorded in $WORK/NAME.json
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: [$name] pretextlab $*" >&2
    timeout --signal=INT --kill-after=15 "$limit" "$PYTHON" "$WORK/step.py" "$WORK/$name.json" "$@"
    local rc=$?
    if [[ ! -s "$WORK/$name.json" ]]; then  # stopped at its limit before it could write its record
        echo "{\"command\": \"pretextlab $*\", \"rc\": $rc, \"timed_out_after_s\": $limit}" > "$WORK/$name.json"
    fi
}

# The data: small synthetic JPEG folders (10 classes of striped colours), so that nothing is downloaded.
"$PYTHON" -c "
import sys
from pathlib import Path
from pretextlab.bench import write_synthetic_folder
write_synthetic_folder(Path(sys.argv[1]), per_class=40)
write_synthetic_folder(Path(sys.argv[2]), per_class=int(sys.argv[3]))
" "$WORK/smoke-data" "$WORK/data" "$PER_CLASS"

# 2. the bench, with lightly where it imports or its wheel is at hand (--no-deps: torch stays as it is)
PEER=()
if ! "$PYTHON" -c "import lightly.loss" 2>/dev/null && compgen -G "$WHEELS/lightly-*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/lightly-*.whl \
        && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if "$PYTHON" -c "import lightly.loss" 2>/dev/null; then
    PEER=(--peer lightly --peer-epochs 1)
else
    echo "gpu_check: lightly is not importable here (put its wheel in $WHEELS/ to race it): bench without it" >&2
fi
step bench 140 bench --quick --device "$DEVICE" --json --out "$WORK/bench-result.json" "${PEER[@]}"

# 3. a smoke study on the device
step smoke_study 60 study --preset smoke --data "$WORK/smoke-data" --device "$DEVICE" --quiet \
    --out "$WORK/study-smoke"

# 4. the fast preset at 10% labels, one pretext task, one seed
step fast_study 150 study --preset fast --data "${DATA:-$WORK/data}" --fractions 0.1 --pretext rotation \
    --seeds 0 --device "$DEVICE" --quiet --out "$WORK/study-fast"

# 5. the gpu preset's training step with and without torch.compile
echo "gpu_check: [compile] the gpu preset's training step, eager and compiled" >&2
timeout --signal=INT --kill-after=15 120 "$PYTHON" - "$WORK/compile.json" "$DEVICE" "$COMPILE_PRESET" \
        "$COMPILE_STEPS" <<'EOF'
import json, sys, time

from pretextlab.bench import compile_check

t0 = time.perf_counter()
result = compile_check(sys.argv[2], sys.argv[3], steps=int(sys.argv[4]))
result["wall_s"] = time.perf_counter() - t0
json.dump(result, open(sys.argv[1], "w"))
print(f"gpu_check: {result['preset']} preset step eager {result['eager']['img_s']:.0f} img/s, compiled "
      f"{result['compiled']['img_s']:.0f} img/s ({result['precision']}, channels_last {result['channels_last']})",
      file=sys.stderr)
EOF

# All figures into one JSON file
mkdir -p "$(dirname "$OUT_JSON")"
"$PYTHON" - "$WORK" "$OUT_JSON" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path

work, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def read(name):
    path = work / name
    return json.loads(path.read_text()) if path.is_file() else None


def study(folder):
    summary = read(f"{folder}/summary.json") or {}
    return {k: summary[k] for k in ("status", "stage_times_s", "pretext", "dataset", "machine") if k in summary}


steps = {name: read(f"{name}.json") for name in ("bench", "smoke_study", "fast_study")}
compiled = read("compile.json")
bench = read("bench-result.json")
result = {
    "device": device,
    "cuda": read("cuda.json"),
    "steps": steps,
    "bench": bench,
    "smoke_study": study("study-smoke"),
    "fast_study": study("study-fast"),
    "compile": compiled if compiled is not None else {"rc": "failed or timed out"},
    "auto": {"precision": (compiled or {}).get("precision"), "channels_last": (compiled or {}).get("channels_last")},
    "peak_gpu_memory_mib": {**{k: (v or {}).get("cuda_max_memory_allocated_mib") for k, v in steps.items()},
                            "compile": (compiled or {}).get("cuda_max_memory_allocated_mib")},
}
failed = [k for k, v in steps.items() if not v or v.get("rc") != 0] + ([] if compiled else ["compile"])
result["failed"] = failed
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"gpu_check: {out}" + (f"; failed: {', '.join(failed)}" if failed else "; every step passed"))
sys.exit(1 if failed else 0)
EOF
