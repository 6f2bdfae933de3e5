#!/usr/bin/env bash
# Run training on every worker of an existing Cloud TPU VM (single host or pod slice).
# Creates nothing: make the TPU VM, copy the repo and install requirements.txt on it first.
#
# Usage:
#   launch/tpu_vm.sh --tpu=NAME --zone=ZONE [--project=P] [--repo_dir=DIR] [--dry_run] \
#     -- --config=CONFIG --workdir=DIR [flags...]
#
# Everything after `--` goes to `python -m skclip_jax.main` on each worker, e.g.
#   launch/tpu_vm.sh --tpu=skclip-v4-32 --zone=us-central2-b \
#     -- --config=configs/ntu60.py:xsub,bf16 --workdir=gs://my-bucket/runs/ntu-xsub
# Every worker runs the same command; the JAX runtime finds the other workers itself. The workdir
# should be shared by all workers (a gs:// bucket), as checkpoints are written collectively.
# Options:
#   --tpu=NAME        TPU VM name (required).      --zone=ZONE     its zone (required).
#   --project=P       GCP project (default: gcloud's configured project).
#   --repo_dir=DIR    repo checkout on the workers (default: ~/skclip_jax).
#   --python=PY       interpreter on the workers (default: python3).
#   --dry_run         print the gcloud command instead of running it.
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

dry_run=0
tpu=""
zone=""
project=""
repo_dir="~/skclip_jax"
python="python3"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    --tpu=*) tpu="${1#--tpu=}"; shift ;;
    --zone=*) zone="${1#--zone=}"; shift ;;
    --project=*) project="${1#--project=}"; shift ;;
    --repo_dir=*) repo_dir="${1#--repo_dir=}"; shift ;;
    --python=*) python="${1#--python=}"; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option '$1' (training flags go after --)" >&2; usage ;;
  esac
done
if [[ -z "$tpu" || -z "$zone" ]]; then
  echo "error: --tpu=NAME and --zone=ZONE are required" >&2
  usage
fi
if [[ $# -eq 0 ]]; then
  echo "error: no training flags; pass at least -- --config=... --workdir=..." >&2
  usage
fi

# The remote shell expands ~ in repo_dir, so it is left unquoted; the training flags are quoted.
remote="cd $repo_dir && PYTHONPATH=$repo_dir $(quote_command "$python" -m skclip_jax.main "$@")"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone")
if [[ -n "$project" ]]; then
  cmd+=("--project=$project")
fi
cmd+=(--worker=all "--command=$remote")

if [[ $dry_run -eq 1 ]]; then
  quote_command "${cmd[@]}"
else
  exec "${cmd[@]}"
fi
