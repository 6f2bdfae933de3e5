#!/usr/bin/env bash
# One-command accelerator check (< 8 min on one GPU): train/eval clips/s in float32 and bfloat16 at batch 32
# and at the largest batch that fits, compile time, peak device memory, MFU; the input pipeline alone with
# 0/4/12 grain workers; a 4-minute Penn Action training with its top-1. Writes one JSON file.
#
# Usage:
#   launch/gpu_check.sh [--cpu] [--dry_run] [--out=FILE] [other skclip_jax.tools.gpu_check flags]
# Examples:
#   launch/gpu_check.sh --out=runs/gpu_check.json --penn_dir=data/penn_action
#   launch/gpu_check.sh --cpu --out=/tmp/gpu_check_cpu.json      # tiny sizes on the CPU
#   launch/gpu_check.sh --cpu --dry_run                           # print the plan, run nothing
# Options (see `python -m skclip_jax.tools.gpu_check --help` for all):
#   --cpu        tiny sizes on the CPU (the demo's tiny config, a synthetic dataset), to test the script.
#   --dry_run    print every stage's command as JSON and exit.
#   --bert_dir=DIR  a bert-base directory (default: $SKCLIP_BERT_BASE, else random bert-base weights).
#   --penn_dir=DIR  converted Penn Action (default data/penn_action).
# Environment: PYTHON (default: python) is the interpreter, e.g. PYTHON=.venv/bin/python.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-2}"
}

for arg in "$@"; do
  case "$arg" in
    -h|--help) usage 0 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
cd "$REPO"
exec env "PYTHONPATH=${REPO}${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m skclip_jax.tools.gpu_check --python="$PY" "$@"
