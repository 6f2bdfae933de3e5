r"""Entry point: `python -m skclip_jax.main --config=configs/ucf101.py[:variants] [--workdir=DIR] [--mode=train|eval]`.

Every hyperparameter is a config field, overridable as `--config.optim.lr=1e-4`. Without --workdir a run goes to
`runs/<config>[_<variants>]` (skclip_jax/workdir.py), named on the first line. A workdir holds one run: a config
that differs from the one saved there beyond the resumable fields stops the command before anything is written
(`--restart` starts over). Mistakes a user can fix end in one or two lines and exit status 2; Ctrl-C saves a
checkpoint and exits 130 (SIGTERM: 0). Under several processes (SLURM, Cloud TPU, or the explicit coordinator
flags) the JAX distributed runtime is initialised first.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from skclip_jax import command_line, host_memory

PROGRAM = "skclip_jax.main"

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Training configuration file (configs/*.py[:variants]). Default with --mode=eval: the config the "
    "run saved in WORKDIR/config.json.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, metrics and plots; default runs/<config name>[_<variants>] in the current "
    "folder. It holds one run: another config there is refused (see --restart).",
)
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "Train (resuming) or evaluate a checkpoint."
)
_RESTART = flags.DEFINE_bool(
    "restart",
    False,
    "Train from scratch in --workdir: once the new run's setup has succeeded, the run there (checkpoints, "
    "config.json, class_names.txt, metrics.jsonl, TensorBoard events, plots, predict/) is deleted.",
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
            raise command_line.UserError(
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


def resolve_run() -> tuple:
    """The config and workdir this command means, checked before jax or TensorFlow is imported.

    Raises:
      command_line.UserError: no config to train with, a missing workdir to evaluate, a config that differs
        from the run saved in the workdir (workdir.check_same_run), or an invalid field value.
    """
    from skclip_jax import run_config
    from skclip_jax import workdir as workdir_lib

    config, mode = _CONFIG.value, _MODE.value
    spec = command_line.config_spec(sys.argv)
    if config is None and mode == "train":
        raise command_line.UserError("--config is required to train, e.g. --config=configs/demo.py")
    if _RESTART.value and mode != "train":
        raise command_line.UserError("--restart applies to training only")
    workdir = _WORKDIR.value
    if not workdir:
        if config is None:
            raise command_line.UserError(
                "--mode=eval needs --workdir (or --config, for its default)"
            )
        workdir = workdir_lib.default_workdir(spec, command_line.load_config_module(spec))
        print(f"workdir: {workdir} (the default for --config={spec}; --workdir=DIR names another)")
    if config is None:
        if not os.path.isdir(workdir):
            raise command_line.UserError(
                f"{workdir}: no such folder; pass --workdir of a trained run"
            )
        try:
            config = run_config.load(workdir)
        except run_config.RunConfigError as e:
            raise command_line.UserError(str(e)) from None
    else:
        config = run_config.absolute_paths(config)
        if not _RESTART.value:
            workdir_lib.check_same_run(config, workdir, mode)
    from skclip_jax.config_lib import validation

    try:
        validation.validate_config(config)
    except ValueError as e:
        raise command_line.UserError(str(e)) from None
    sys.stdout.flush()
    return config, workdir


def _interrupted_line(workdir: str) -> str:
    """What a Ctrl-C outside the training loop leaves: the workdir's last complete checkpoint, if any."""
    from skclip_jax import checkpointing

    directory = checkpointing.checkpoint_dir(workdir)
    steps = checkpointing.complete_steps(directory)
    kept = (
        f"the last complete checkpoint is step {steps[-1]} in {directory}"
        if steps
        else "no checkpoint"
    )
    return f"interrupted; {kept}"


def run(config, workdir: str):
    """Trains or evaluates (`--mode`) once the command is known to be valid; returns the last evaluation."""
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

    from skclip_jax import compilation_cache, train

    cache_dir = compilation_cache.enable(_COMPILATION_CACHE.value)
    logging.info(
        "JAX process %d/%d, %d local devices (%s); compilation cache: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.devices()[0].device_kind,
        cache_dir or "off",
    )
    ensure_demo_data(config)
    if _MODE.value == "train":
        os.makedirs(workdir, exist_ok=True)
        result = train.train_and_evaluate(config, workdir, restart=_RESTART.value)
    else:
        result = train.evaluate_checkpoint(config, workdir, _STEP.value)
    if jax.process_index() == 0 and result:
        print(
            "final evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True
        )
    return result


def main(argv):
    command_line.check_no_arguments(argv, PROGRAM)
    try:
        config, workdir = resolve_run()
    except command_line.UserError as e:
        command_line.fail(PROGRAM, e)
    from skclip_jax import checkpointing, train

    try:
        run(config, workdir)
    except train.Interrupted as e:  # Ctrl-C in the loop: the checkpoint is saved
        command_line.exit_interrupted(PROGRAM, e)
    except KeyboardInterrupt:  # Ctrl-C before or after the loop
        command_line.exit_interrupted(PROGRAM, _interrupted_line(workdir))
    except (train.SetupError, command_line.UserError) as e:
        command_line.fail(PROGRAM, e)
    except (train.NonFiniteLossError, checkpointing.CheckpointWriteError) as e:
        command_line.fail(PROGRAM, e, status=1)


def cli() -> None:
    """The `skclip-train` console script (and `python -m skclip_jax.main`)."""
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    app.run(main, flags_parser=command_line.flags_parser(PROGRAM))


if __name__ == "__main__":
    cli()
