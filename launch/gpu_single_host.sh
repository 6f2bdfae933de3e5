#!/usr/bin/env bash
# Train on every local GPU of one machine with a single process (one jitted step over all devices).
#
# Usage:
#   launch/gpu_single_host.sh [--gpus=0,1,...] [--dry_run] -- --config=CONFIG --workdir=DIR [flags...]
#
# Everything after `--` goes to `python -m skclip_jax.main` unchanged, e.g.
#   launch/gpu_single_host.sh -- --config=configs/ucf101.py:split1 --workdir=runs/ucf1
#   launch/gpu_single_host.sh --gpus=0,1 -- --config=configs/ntu60.py:xsub,bf16 --workdir=runs/ntu
# Options:
#   --gpus=LIST  restrict to these GPUs (sets CUDA_VISIBLE_DEVICES); default: all visible GPUs.
#   --dry_run    print the command instead of running it.
# Environment: PYTHON (default: python) is the interpreter, e.g. PYTHON=.venv/bin/python.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-2}"
}

# Prints its arguments as one shell command line (single quotes only where needed).
quote_command() {
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry_run=0
gpus=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    --gpus=*) gpus="${1#--gpus=}"; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option '$1' (training flags go after --)" >&2; usage ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "error: no training flags; pass at least -- --config=... --workdir=..." >&2
  usage
fi

# PYTHONPATH instead of cd: relative --config and --workdir paths stay relative to the caller.
cmd=(env "PYTHONPATH=${REPO}${PYTHONPATH:+:$PYTHONPATH}")
if [[ -n "$gpus" ]]; then
  cmd+=("CUDA_VISIBLE_DEVICES=$gpus")
fi
cmd+=("${PYTHON:-python}" -m skclip_jax.main "$@")

if [[ $dry_run -eq 1 ]]; then
  quote_command "${cmd[@]}"
else
  exec "${cmd[@]}"
fi
