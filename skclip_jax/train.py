"""The training program: data, model and steps joined into a resumable, preemptible, evaluated run.

`train_and_evaluate` trains (resuming from WORKDIR/checkpoints when possible) and evaluates periodically;
`evaluate_checkpoint` scores a saved checkpoint on the test split. Both write metrics.jsonl, TensorBoard scalars and
the PNG plots in the workdir from process 0 only.
"""

import dataclasses
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from skclip_jax import (
    checkpointing,
    class_texts,
    classifier_steps,
    evaluators,
    factory,
    host_memory,
    input_pipeline,
    metrics_io,
    plots,
    prefetch,
    run_config,
    sharding,
    steps,
)
from skclip_jax import workdir as workdir_lib
from skclip_jax.config_lib import validation


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops before saving anything from that state."""


class SetupError(ValueError):
    """A bad config value, a missing directory or checkpoint: reported without a traceback."""


class Interrupted(RuntimeError):
    """Ctrl-C stopped training once the step in flight was checkpointed; the message says where (exit 130)."""


class _Preemption:
    """Turns SIGTERM (a preempted VM, a SLURM time limit) and Ctrl-C into a flag the loop checks between steps.

    The step in flight finishes and is checkpointed. A second Ctrl-C exits at once (status 130) without
    waiting for that save: orbax renames a checkpoint's folder only when it is complete, so the cut-short save
    is never resumed from (checkpointing.py).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        def handler(signum, frame):
            del frame
            if self.requested and signum == signal.SIGINT:
                os.write(
                    2, b"\nSecond Ctrl-C: exiting now; the last complete checkpoint is kept.\n"
                )
                os._exit(130)
            if signum == signal.SIGINT:
                os.write(
                    2, b"\nCtrl-C: saving a checkpoint after this step (Ctrl-C again quits now).\n"
                )
            else:
                logging.warning("Signal %d received: saving a checkpoint and exiting.", signum)
            self.requested = True
            self.signum = self.signum or signum

        self._previous = {s: signal.signal(s, handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


@dataclasses.dataclass
class Experiment:
    """Everything built once per run: data description, tokens, compiled steps, state and shardings."""

    config: ml_collections.ConfigDict
    info: input_pipeline.DatasetInfo
    mesh: Any
    class_tokens: dict[str, jax.Array]
    steps_per_epoch: int
    total_steps: int
    state: factory.TrainState
    state_shardings: Any
    steps: steps.CompiledSteps
    # Zero-shot runs (data.unseen_classes): the held-out classes, and the seen classes' tokens that
    # training uses (its labels count the seen classes only); evaluation uses class_tokens (all).
    unseen: tuple[int, ...] = ()
    train_class_tokens: dict[str, jax.Array] | None = None


def total_steps_of(config, steps_per_epoch: int) -> int:
    return config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch


def every(config_value: int, steps_per_epoch: int) -> int:
    """A period in steps; -k means every k epochs, so -1 is once per epoch (validation rejects 0)."""
    return config_value if config_value > 0 else -config_value * steps_per_epoch


def build_experiment(config: ml_collections.ConfigDict, load_pretrained: bool = True) -> Experiment:
    """Data, tokens, model, optimizer, initial state and compiled steps.

    load_pretrained=False skips reading the BERT checkpoint when a restored state will replace the weights anyway.
    """
    try:
        return _build_experiment(config, load_pretrained)
    except (ValueError, FileNotFoundError) as e:
        raise SetupError(str(e)) from e


def _build_experiment(config: ml_collections.ConfigDict, load_pretrained: bool) -> Experiment:
    validation.validate_config(config)
    config = input_pipeline.with_calibration_split(config)
    named_splits = {
        "train_split": config.data.train_split,
        "test_split": config.data.test_split,
        "calibration_split": config.data.calibration_split,
    }
    info = input_pipeline.load_dataset_info(
        config.data.data_dir,
        config.data.class_names_file,
        slices=[split for split in named_splits.values() if split],
    )
    for field, split in named_splits.items():
        if split and split not in info.split_sizes:
            raise ValueError(
                f"data.{field}={split!r} is not a split of {info.data_dir}; it has "
                f"{sorted(info.split_sizes)}"
            )
    mesh = sharding.make_mesh(config.mesh_shape)
    sharding.check_batch_divisible(config.batch_size, mesh, "batch_size")
    sharding.check_batch_divisible(config.eval_batch_size, mesh, "eval_batch_size")

    # First: the class tokens decide the steps per epoch. The PoseConv3D baseline has no text tower: its
    # "tokens" are the class indices.
    tower, tokens, train_tokens, unseen = None, None, None, ()
    if factory.is_classifier(config):
        tokens = classifier_steps.class_index_tokens(info.num_classes)
    else:
        tower = factory.load_text_tower(config)
        tokens, train_tokens, unseen = class_texts.run_tokens(
            config.data, info.class_names, tower.tokenizer
        )
    class_tokens, train_class_tokens = jax.device_put(
        jax.tree.map(jnp.asarray, (tokens, train_tokens)), sharding.replicated(mesh)
    )
    steps_per_epoch = input_pipeline.steps_per_epoch(info, config, unseen)
    total_steps = total_steps_of(config, steps_per_epoch)
    parts = factory.build(
        config,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        tower=tower,
        num_classes=info.num_classes,
    )
    state, state_shardings = factory.init_state(
        parts, config, mesh, load_pretrained=load_pretrained
    )
    compile_steps = (
        classifier_steps.compile_steps if factory.is_classifier(config) else steps.compile_steps
    )
    compiled = compile_steps(
        parts.model, steps.StepOptions.from_config(config), parts.schedule, mesh, state_shardings
    )
    return Experiment(
        config,
        info,
        mesh,
        class_tokens,
        steps_per_epoch,
        total_steps,
        state,
        state_shardings,
        compiled,
        unseen,
        train_class_tokens,
    )


def predict_split(exp: Experiment, state, class_feats, split: str | None = None):
    """(probs [N, L], labels [N], per-view logits [N, V, L]) of every clip of the test split (or `split`).

    The per-view logits are kept for zero-shot runs only (their subset metrics need them); else None.
    """
    probs, labels, view_logits = [], [], []
    for local in input_pipeline.eval_iterator(exp.info, exp.config, split=split):
        out = jax.device_get(
            exp.steps.eval(state, sharding.make_global_batch(exp.mesh, local), class_feats)
        )
        keep = np.asarray(out["mask"], bool)
        probs.append(np.asarray(out["probs"])[keep])
        labels.append(np.asarray(out["label"])[keep])
        if exp.unseen:
            view_logits.append(np.asarray(out["logits"])[keep])
    view_logits = np.concatenate(view_logits) if view_logits else None
    return np.concatenate(probs), np.concatenate(labels), view_logits


def run_evaluation(
    exp: Experiment, state: factory.TrainState
) -> tuple[dict[str, float], np.ndarray]:
    """Top-1, top-5 and mean class accuracy over the whole test split; returns (metrics, confusion matrix).

    Zero-shot runs add ZSL / GZSL figures and, with a calibration split, calibrated GZSL (its seen-class
    clips choose the offset; docs/zero_shot.md). A run that keeps a parameter average is scored with it.
    """
    state = factory.evaluation_view(state)
    # The last train step's temp, which jemalloc keeps for the next step, goes back first: else the eval
    # step's compilation and buffers would sit on top of it (host_memory.py).
    jax.block_until_ready(state)
    host_memory.release_free_heap()
    class_feats = exp.steps.encode_classes(state, exp.class_tokens)
    probs, labels, view_logits = predict_split(exp, state, class_feats)
    metrics = evaluators.classification_metrics(probs, labels)
    if exp.unseen:
        metrics.update(evaluators.zero_shot_metrics(view_logits, labels, exp.unseen))
        metrics.update(_calibrated_metrics(exp, state, class_feats, view_logits, labels))
    confusion = evaluators.confusion_matrix(probs.argmax(-1), labels, exp.info.num_classes)
    host_memory.release_free_heap()  # after each evaluation: the first one compiled the eval step
    return {k: float(v) for k, v in metrics.items()}, confusion


def _calibrated_metrics(exp: Experiment, state, class_feats, view_logits, labels) -> dict:
    """Calibrated and gated GZSL on the test split, offset and gate threshold chosen on the calibration split's
    seen-class clips."""
    split = exp.config.data.calibration_split
    if not split:
        return {}
    _, cal_labels, cal_logits = predict_split(exp, state, class_feats, split)
    seen_rows = ~np.isin(cal_labels, exp.unseen)
    if not seen_rows.any():
        logging.warning("data.calibration_split=%r holds no seen-class clip: not calibrated", split)
        return {}
    keep_seen = exp.config.data.calibration_keep_seen
    metrics = evaluators.calibrated_gzsl_metrics(
        view_logits, labels, cal_logits[seen_rows], cal_labels[seen_rows], exp.unseen, keep_seen
    )
    temperature = float(np.clip(state.params["temperature"], *exp.config.model.temperature_range))
    metrics.update(
        evaluators.gated_gzsl_metrics(
            view_logits, labels, cal_logits[seen_rows], exp.unseen, temperature, keep_seen
        )
    )
    return metrics


def _fetch_train_metrics(buffer: list[tuple[int, dict]]) -> list[tuple[int, dict[str, float]]]:
    """One device_get for all steps since the last log; raises on the first non-finite loss, naming its step.

    Logged values are the means over those steps, so `log_every_steps` trades detail for file size only.
    """
    fetched = jax.device_get([m for _, m in buffer])
    rows = []
    for (step, _), m in zip(buffer, fetched, strict=True):
        values = {k: float(v) for k, v in m.items()}
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"loss is {values['loss']} at step {step}; stopping. The last good checkpoint is kept."
            )
        rows.append((step, values))
    return rows


class _Throughput:
    """Training clips per second between two logs, excluding evaluation time."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.restart()

    def restart(self):
        self.start, self.steps = time.perf_counter(), 0

    def clips_per_sec(self) -> float:
        rate = self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
        self.restart()
        return rate


def _log_train_metrics(buffer, done: int, throughput: _Throughput, writer, bar) -> float:
    """Fetches the buffered step metrics (NaN guard included), logs their mean at step `done`; returns clips/s."""
    rows = _fetch_train_metrics(buffer)
    values = {k: float(np.mean([r[k] for _, r in rows])) for k in rows[-1][1]}
    values["learning_rate"] = rows[-1][1]["learning_rate"]
    values["clips_per_sec"] = throughput.clips_per_sec()
    writer.write(done, values, kind="train")
    bar.set_postfix(loss=f"{values['loss']:.4f}", clips_s=f"{values['clips_per_sec']:.1f}")
    return values["clips_per_sec"]


def _start_run(config: ml_collections.ConfigDict, workdir: str, restart: bool):
    """Builds the run and restores its newest readable checkpoint (or, with `restart`, deletes the previous run
    once the setup has succeeded); only then is config.json written. Returns (exp, manager, state, step, best).

    Raises:
      SetupError: a bad setup, a checkpoint that does not fit the config or that none can be read, or a
        dataset whose classes are not the ones the run trained on.
    """
    resume = not restart and bool(
        checkpointing.complete_steps(checkpointing.checkpoint_dir(workdir))
    )
    exp = build_experiment(config, load_pretrained=not resume)
    is_main = jax.process_index() == 0
    if restart:
        removed = workdir_lib.remove_run(workdir) if is_main else []
        if removed:
            print(f"--restart: deleted {', '.join(removed)} from {workdir}", flush=True)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("previous run deleted")
    else:
        try:
            workdir_lib.check_class_names(workdir, exp.info.class_names, config.data.data_dir)
        except workdir_lib.WorkdirConflict as e:
            raise SetupError(str(e)) from None
    manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints)
    # The paper reports the best per-epoch validation top-1 (mmcv save_best); it rides in the checkpoint's
    # position so that every process, and a resumed run, knows it.
    state, start_step, best_top1 = exp.state, 0, -math.inf
    if resume:
        try:
            state, position = checkpointing.restore_latest_readable(
                manager, jax.eval_shape(lambda: exp.state), exp.state_shardings
            )
        except (checkpointing.CheckpointMismatchError, checkpointing.CheckpointReadError) as e:
            manager.close()
            raise SetupError(str(e)) from None
        start_step = int(position["step"])
        best_top1 = float(position.get("best_top1", -math.inf))
        logging.info("Resuming at step %d", start_step)
    if is_main:  # the workdir alone is then enough for --mode=eval and predict.
        run_config.save(workdir, config, exp.info.class_names)
    exp.state = None  # restored or initial, `state` is the only live copy (the step donates it).
    return exp, manager, state, start_step, best_top1


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, restart: bool = False
) -> dict[str, float]:
    """Trains to config.total_steps (or num_epochs), evaluating and checkpointing on the way; returns last eval.

    Resumes from the newest readable checkpoint in `workdir`; `restart` deletes the run there instead
    (workdir.RUN_FILES) once the new run's setup has succeeded. Raises Interrupted after Ctrl-C (saved).
    """
    exp, manager, state, start_step, best_top1 = _start_run(config, workdir, restart)
    is_main = jax.process_index() == 0
    writer = metrics_io.MetricsWriter(workdir, enabled=is_main)
    if is_main:
        writer.truncate_after(start_step)

    log_every = every(config.log_every_steps, exp.steps_per_epoch)
    eval_every = every(config.eval_every_steps, exp.steps_per_epoch)
    ckpt_every = every(config.checkpoint_every_steps, exp.steps_per_epoch)
    base_rng = jax.random.key(config.seed)
    train_split = exp.config.data.train_split  # a zero-shot run's calibration clips carved off
    train_clips = input_pipeline.num_train_examples(exp.info, exp.config, exp.unseen)
    unseen_note = " (seen classes)" if exp.unseen else ""
    plan = (
        f"Plan: {exp.total_steps} steps of {config.batch_size} clips = "
        f"{exp.total_steps * config.batch_size / max(train_clips, 1):.1f} passes over the "
        f"{train_clips} clips{unseen_note} of split {train_split!r} ({exp.steps_per_epoch} steps an epoch "
        f"with repeat {config.data.repeat}); evaluation every {eval_every} steps; "
        f"global batch {config.batch_size} on {jax.device_count()} devices, mesh {dict(exp.mesh.shape)}"
    )
    logging.info(plan)
    if is_main and start_step < exp.total_steps:
        print(plan, flush=True)
    train_tokens = exp.class_tokens if exp.train_class_tokens is None else exp.train_class_tokens
    # Global batches are placed on the devices by a background thread, data.device_prefetch steps ahead, so
    # the step does not wait for the host (0: placed synchronously in the loop). Same batches, same order.
    device_prefetch = config.data.get("device_prefetch", 2)
    batches = prefetch.DevicePrefetcher(
        input_pipeline.train_iterator(
            exp.info, exp.config, start_step, exp.total_steps, unseen=exp.unseen
        ),
        exp.mesh,
        size=max(1, device_prefetch),
        start_position=start_step,
        threaded=device_prefetch > 0,
    )
    buffer: list[tuple[int, dict]] = []
    last_eval: dict[str, float] = {}
    throughput = _Throughput(config.batch_size)
    estimated = False
    bar = tqdm(total=exp.total_steps, initial=start_step, disable=not is_main, unit="step")
    await_each_step = host_memory.one_step_at_a_time(jax.default_backend())
    interrupted_at = None
    try:
        with _Preemption() as preemption:
            for step in range(start_step, exp.total_steps):
                batch = next(batches)
                if await_each_step:  # one step's temp at a time (host_memory.one_step_at_a_time)
                    jax.block_until_ready(state)
                state, metrics = exp.steps.train(state, batch, train_tokens, base_rng)
                if step == start_step:
                    host_memory.release_free_heap()  # the compilation's freed working memory
                done = step + 1
                buffer.append((done, metrics))
                throughput.steps += 1
                bar.update(1)
                # Read the signal flag once: a SIGTERM later in this iteration waits for the next step.
                stop = preemption.requested or manager.reached_preemption(done)
                want_eval = done % eval_every == 0 or done == exp.total_steps
                want_ckpt = want_eval or stop or done % ckpt_every == 0
                if want_ckpt or done % log_every == 0:
                    # NaN guard first.
                    rate = _log_train_metrics(buffer, done, throughput, writer, bar)
                    buffer = []
                    if not estimated and done - start_step > 1 and rate > 0:
                        # The first window includes compilation; the second one is the steady rate.
                        if done - start_step >= 2 * log_every:
                            estimated = True
                            minutes = (exp.total_steps - done) * config.batch_size / rate / 60
                            bar.write(
                                f"Expected training time left: {minutes:.1f} min at {rate:.1f} "
                                "clips/s (evaluations not included)"
                            )
                eval_metrics = None
                if want_eval:
                    eval_metrics, confusion = run_evaluation(exp, state)
                    best_top1 = max(best_top1, eval_metrics["top1"])
                    eval_metrics["best_top1"] = best_top1
                    last_eval = eval_metrics
                    writer.write(done, eval_metrics, kind="eval")
                    bar.write(
                        f"step {done}: "
                        + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items())
                    )
                    if is_main:
                        plots.write_all_plots(workdir, confusion, exp.info.class_names)
                    throughput.restart()
                if want_ckpt:
                    position = {"step": done, "seed": config.seed}
                    if math.isfinite(best_top1):
                        position["best_top1"] = best_top1
                    checkpointing.save(
                        manager, done, state, position, evaluators.checkpoint_metrics(eval_metrics)
                    )
                if stop:
                    checkpointing.wait_until_finished(manager)
                    if preemption.signum == signal.SIGINT:
                        interrupted_at = done
                    else:
                        logging.warning("Preempted: checkpoint of step %d saved; exiting.", done)
                    break
    finally:
        # Also on an exception (a NaN loss): let pending asynchronous saves of good states finish.
        batches.close()
        bar.close()
        try:
            checkpointing.wait_until_finished(manager)
        finally:
            manager.close()
            writer.close()
    if interrupted_at is not None:
        where = os.path.join(checkpointing.checkpoint_dir(workdir), str(interrupted_at))
        raise Interrupted(
            f"interrupted: checkpoint of step {interrupted_at} saved in {where}; run the same command "
            "to resume"
        )
    if last_eval:
        logging.info(
            "Last evaluation: top-1 %.4f; best top-1 %.4f (the best over evaluations, the paper's "
            "figure); mean class accuracy %.4f",
            last_eval["top1"],
            last_eval["best_top1"],
            last_eval["mean_class_accuracy"],
        )
    return last_eval


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> dict[str, float]:
    """Evaluates the latest (or a given) checkpoint in WORKDIR and appends the result to metrics.jsonl."""
    manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints, read_only=True)
    if manager.latest_step() is None:
        raise SetupError(
            f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}; train first or pass --workdir of a run"
        )
    exp = build_experiment(config, load_pretrained=False)
    try:
        workdir_lib.check_class_names(workdir, exp.info.class_names, config.data.data_dir)
        state, position = checkpointing.restore(
            manager, jax.eval_shape(lambda: exp.state), exp.state_shardings, step
        )
    except (
        FileNotFoundError,
        workdir_lib.WorkdirConflict,
        checkpointing.CheckpointMismatchError,
        checkpointing.CheckpointReadError,
    ) as e:
        manager.close()
        raise SetupError(str(e)) from None
    metrics, confusion = run_evaluation(exp, state)
    # Same row shape as the training run's evaluations: the best top-1 known at this checkpoint.
    metrics["best_top1"] = max(metrics["top1"], float(position.get("best_top1", -math.inf)))
    if jax.process_index() == 0:
        writer = metrics_io.MetricsWriter(workdir, enabled=True)
        writer.write(int(position["step"]), metrics, kind="eval")
        writer.close()
        plots.write_all_plots(workdir, confusion, exp.info.class_names)
    manager.close()
    return metrics
