#!/usr/bin/env bash
# The GPU check, for a machine whose image already has a CUDA build of JAX:
# install this package beside that JAX without changing it, check that JAX
# sees a GPU, then time `study bench peer`, `study bench scaling` and the
# default `study all`, and print each experiment's and program's times.
#
#   bash scripts/gpu_check.sh [OUT]       # OUT: default $OUT, else /tmp/gpu_check
#
# PYTHON picks the interpreter (default python3); STUDY_ARGS is added to
# `study all` (e.g. "--quick"). Without a package index (the lent machines
# reach none), set WHEELS to a folder of wheels for the missing packages and
# setuptools (`pip download -d WHEELS --python-version X.Y --only-binary=:all: ...`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/gpu_check}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"

if ! "$PY" -c 'import jax' 2>/dev/null; then
  echo "gpu_check: no JAX under $PY; this check expects the image's CUDA build of JAX" >&2
  exit 1
fi
"$PY" -c 'import jax; print(jax.devices())'
if ! "$PY" -c 'import jax, sys; sys.exit(jax.devices()[0].platform != "gpu")'; then
  echo "gpu_check: JAX sees no GPU (above: its devices); is this a CUDA build of JAX on a GPU machine?" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# The image's JAX, its CUDA plugins and what JAX is built against stay as they
# are (pinned below); pip adds the rest of pyproject.toml's dependencies and
# picks the flax that fits this JAX (0.12.8 for JAX 0.10, 0.12.9+ for 0.11 and 0.12).
"$PY" -m pip list --format=freeze | grep -iE '^(jax|numpy|scipy|ml[-_]dtypes|opt[-_]einsum|nvidia)' \
  > "$OUT/pins.txt"
deps=$("$PY" -c 'import tomllib
print(" ".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
               if not d.startswith("jax")))')
index=()
[[ -n "${WHEELS:-}" ]] && index=(--no-index --find-links "$WHEELS")
"$PY" -m pip install -q "${index[@]}" --no-deps -e .  # offline, WHEELS needs setuptools too
# shellcheck disable=SC2086  # $deps: one requirement per word
"$PY" -m pip install -q "${index[@]}" -c "$OUT/pins.txt" $deps
"$PY" -c 'import jax, flax, optax; print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")'

export STUDY_CACHE_DIR="$OUT/jax-cache"  # an empty cache: compile times as a new user meets them
rm -rf "$STUDY_CACHE_DIR"
study=("$PY" -m study.cli)
echo "== study bench peer"
"${study[@]}" bench peer
echo "== study bench scaling"
"${study[@]}" bench scaling
echo "== study all ${STUDY_ARGS:-}"
start=$SECONDS
# shellcheck disable=SC2086  # STUDY_ARGS: options, one per word
"${study[@]}" all ${STUDY_ARGS:-} --out "$OUT/gpu"
echo "study all: $((SECONDS - start)) s wall"

echo "== times per experiment and program (from the results' metadata)"
"$PY" - "$OUT/gpu/results" <<'EOF'
import json, pathlib, sys
import pyarrow.parquet as pq

for path in sorted(pathlib.Path(sys.argv[1]).glob("*.parquet")):
    if "-" in path.stem:  # a finer table beside an experiment's main file
        continue
    meta = json.loads(pq.read_schema(path).metadata[b"study"])
    d = meta["devices"]
    print(f"{meta['experiment']}: wall {meta['wall_time_s']:.1f} s on {d['count']} x {d['kind']}")
    for p in meta["programs"]:
        work = p["runs"] * p["setup"]["epochs"]
        print(f"  {p['label']:24s} {p['runs']:6d} runs  compile {p['compile_s']:6.1f} s  train {p['train_s']:7.2f} s"
              f"  {work / p['train_s']:10,.0f} run-epochs/s")
EOF
