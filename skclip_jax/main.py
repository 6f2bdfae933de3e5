r"""Entry point: `python -m skclip_jax.main --config=configs/ucf101.py[:variants] --workdir=DIR [--mode=train|eval]`.

Every hyperparameter is a config field, overridable as `--config.optim.lr=1e-4`. Under several processes
(SLURM, Cloud TPU, or the explicit coordinator flags) the JAX distributed runtime is initialised first.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from skclip_jax import host_memory

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Training configuration file (configs/*.py[:variants]). Default with --mode=eval: the config the "
    "run saved in WORKDIR/config.json.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "Train (resuming) or evaluate a checkpoint."
)
_STEP = flags.DEFINE_integer(
    "step", None, "With --mode=eval: the checkpoint step (default: latest)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", "gloo", "CPU collectives for multi-process CPU runs (gloo)."
)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "JAX's persistent compilation cache (restarts, resumes and evals skip recompiling); default "
    "~/.cache/skclip_jax/xla, '' turns it off. JAX_COMPILATION_CACHE_DIR, when set, wins.",
)

flags.mark_flags_as_required(["workdir"])


def quiet_library_info_logs() -> None:
    """Keeps orbax's per-save chatter and clu's per-metric lines off the console (the progress bar, eval lines,
    metrics.jsonl and TensorBoard carry them); their warnings and errors still show."""
    import logging as py_logging

    noisy = (
        os.sep + "orbax" + os.sep,
        os.sep + "clu" + os.sep,
        os.sep + "tensorflow_datasets" + os.sep,
    )

    class _Filter(py_logging.Filter):
        def filter(self, record):
            return record.levelno >= py_logging.WARNING or not any(
                n in record.pathname for n in noisy
            )

    logging.get_absl_handler().addFilter(_Filter())


def _detected_cluster() -> bool:
    """Several SLURM tasks or several TPU VM workers: jax.distributed.initialize() finds the rest itself."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_distributed() -> None:
    """jax.distributed.initialize() for explicit coordinator flags or a detected SLURM / TPU environment."""
    import jax

    if _COORDINATOR.value is not None:
        if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
            raise app.UsageError(
                "--coordinator_address needs --num_processes and --process_id as well"
            )
        # Only used by CPU devices (tests, laptops); harmless on GPU and TPU.
        if _CPU_COLLECTIVES.value:
            jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif _detected_cluster():
        jax.distributed.initialize()


def ensure_demo_data(config) -> None:
    """The demo's synthetic dataset is generated on first use, so a fresh clone trains with one command.

    An existing directory is reused only if it was generated with the same `data.synthetic` settings: a dataset
    of another seed or size must not stand in silently for the one the config names (train.SetupError).
    """
    if not config.data.get("generate_synthetic", False):
        return
    import jax

    # The entry point may use the offline converter; the library never does.
    from data_prep import synthetic, tfds_writer
    from skclip_jax import train

    if jax.process_index() == 0:
        if not os.path.isdir(config.data.data_dir):
            logging.info("Generating the synthetic demo dataset in %s", config.data.data_dir)
        try:
            synthetic.make_synthetic_dataset(
                config.data.data_dir, **config.data.synthetic.to_dict()
            )
        except tfds_writer.DataPrepError as e:
            raise train.SetupError(
                f"data.data_dir {config.data.data_dir} holds another dataset than data.synthetic "
                f"describes ({e}); name a new data.data_dir for these settings or delete that directory"
            ) from None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("synthetic data ready")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    quiet_library_info_logs()
    try:
        import tensorflow as tf
    except ImportError:  # ArrayRecord datasets are read without TensorFlow (TFRecord ones need it).
        pass
    else:
        # tf.data / TFDS must not grab accelerator memory that JAX needs.
        tf.config.set_visible_devices([], "GPU")
    initialize_distributed()

    import jax

    from skclip_jax import checkpointing, compilation_cache, run_config, train

    cache_dir = compilation_cache.enable(_COMPILATION_CACHE.value)
    config = _CONFIG.value
    if config is None:
        if _MODE.value == "train":
            raise app.UsageError("--config is required to train")
        try:
            config = run_config.load(_WORKDIR.value)
        except run_config.RunConfigError as e:
            print(f"skclip_jax: error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
    logging.info(
        "JAX process %d/%d, %d local devices (%s); compilation cache: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.devices()[0].device_kind,
        cache_dir or "off",
    )
    try:
        ensure_demo_data(config)
        os.makedirs(_WORKDIR.value, exist_ok=True)
        if _MODE.value == "train":
            result = train.train_and_evaluate(config, _WORKDIR.value)
        else:
            result = train.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
    except (
        train.SetupError,
        train.NonFiniteLossError,
        checkpointing.CheckpointWriteError,
    ) as e:
        logging.error("%s", e)
        print(f"skclip_jax: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    if jax.process_index() == 0 and result:
        print(
            "final evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True
        )


def cli() -> None:
    """The `skclip-train` console script (and `python -m skclip_jax.main`)."""
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    app.run(main)


if __name__ == "__main__":
    cli()
