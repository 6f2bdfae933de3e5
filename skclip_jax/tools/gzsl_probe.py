r"""Why new names lose beside trained ones: a zero-shot run's similarities, text geometry and GZSL rules.

    python -m skclip_jax.tools.gzsl_probe --workdir=RUN [--step=N]

Restores a zero-shot run (one with data.unseen_classes) and prints, from its test split and its held-out training
clips (data.calibration_split):
  * the temperature; how far the fine-tuned text tower moved each class text from the pretrained BERT's (both through
    the run's projection), the seen names' mean pairwise cosine, and each unseen name's nearest seen name;
  * each clip's view-averaged cosine similarity to its own name, its nearest seen and its nearest unseen name, for
    seen and unseen test clips and the held-out clips, and which seen names the unseen clips choose;
  * GZSL seen / unseen / H of scoring rules whose threshold is set on the held-out seen clips (keep
    data.calibration_keep_seen of them on the seen side), with the area under each rule's curve over every threshold.
The rules are diagnostics on test clips: docs/zero_shot.md says which rule was chosen, and on what.
"""

import functools
import sys

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when this module is the program (as the other tools)."""
    flags.DEFINE_string("workdir", None, "A zero-shot run's workdir.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.mark_flags_as_required(["workdir"])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _spread(x: np.ndarray) -> str:
    p10, p90 = np.quantile(x, [0.1, 0.9])
    return f"{x.mean():6.3f}  ({p10:.2f} to {p90:.2f})"


class Split:
    """One split's view similarities [N, V, L] (cosines) and labels [N]."""

    def __init__(self, sims: np.ndarray, labels: np.ndarray):
        self.sims, self.labels = sims, labels
        self.mean = sims.mean(1)  # [N, L], views averaged


def stacking(score_test, score_held, seen, keep) -> np.ndarray:
    """Calibrated stacking on any score [N, L]: the offset keeps `keep` of the held-out clips on the seen side;
    returns the test clips' predictions."""
    margin = score_held[:, seen].max(-1) - score_held[:, ~seen].max(-1)
    gamma = np.quantile(margin, 1.0 - keep)
    return (score_test - gamma * seen).argmax(-1)


def rule_rows(test: Split, held: Split, pretrained: tuple[Split, Split], unseen, temperature, keep):
    """(name, S, U, H, area) of every rule; `pretrained`: the test and held-out clips scored against the pretrained
    BERT's class texts."""
    from skclip_jax import evaluators as ev

    num_classes = test.sims.shape[-1]
    seen = ~np.isin(np.arange(num_classes), unseen)
    seen_cls, unseen_cls = np.flatnonzero(seen), np.flatnonzero(~seen)
    is_unseen = np.isin(test.labels, unseen)

    def row(name, pred, area):
        s = float(np.mean(pred[~is_unseen] == test.labels[~is_unseen]))
        u = float(np.mean(pred[is_unseen] == test.labels[is_unseen]))
        return name, s, u, ev.harmonic_mean(s, u), area

    def stack(name, score_test, score_held):
        pred = stacking(score_test, score_held, seen, keep)
        return row(name, pred, ev.ausuc(score_test, test.labels, unseen))

    def probs(split, t):
        return ev.subset_probs(split.sims / t, np.arange(num_classes))

    rows = [
        stack("stacking on probabilities", probs(test, temperature), probs(held, temperature)),
        stack("stacking on view-mean logits", test.mean / temperature, held.mean / temperature),
    ]
    for k in (
        5,
        20,
    ):  # CSLS: each name's hubness, its mean similarity to its k nearest held-out clips
        hub = np.sort(held.mean, axis=0)[-k:].mean(0)
        rows.append(stack(f"stacking after CSLS (k={k})", 2 * test.mean - hub, 2 * held.mean - hub))
    mu, sd = held.mean.mean(0), held.mean.std(0)
    rows.append(
        stack("stacking after z-normalisation", (test.mean - mu) / sd, (held.mean - mu) / sd)
    )
    for t in (0.02, 0.05, 0.1):
        rows.append(stack(f"stacking at temperature {t}", probs(test, t), probs(held, t)))
    test_pre, held_pre = pretrained
    rows.append(
        stack(
            "stacking, pretrained BERT texts",
            probs(test_pre, temperature),
            probs(held_pre, temperature),
        )
    )
    seen_pred = seen_cls[ev.subset_probs(test.sims / temperature, seen_cls).argmax(-1)]
    unseen_pred = unseen_cls[ev.subset_probs(test.sims / temperature, unseen_cls).argmax(-1)]
    confidences = {
        "gate on the maximum seen probability": lambda s: ev.subset_probs(
            s.sims / temperature, seen_cls
        ).max(-1),
        "gate on the seen energy": lambda s: (
            temperature * np.log(np.exp(s.sims[..., seen_cls] / temperature).sum(-1))
        ).mean(1),
        "gate on the nearest seen cosine": lambda s: s.mean[:, seen_cls].max(-1),
    }
    for name, confidence in confidences.items():
        c_test, c_held = confidence(test), confidence(held)
        threshold = np.quantile(c_held, 1.0 - keep)
        pred = np.where(c_test >= threshold, seen_pred, unseen_pred)
        curve = ev.switching_curve(c_test, seen_pred, unseen_pred, test.labels, unseen)
        rows.append(row(name, pred, ev.curve_area(*curve)))
    return rows


def probe(workdir: str, step: int | None, out=sys.stdout) -> None:
    import jax

    from skclip_jax import checkpointing, factory, run_config, train

    config = run_config.load(workdir)
    exp = train.build_experiment(config, load_pretrained=True)  # exp.state: the pretrained BERT
    if not exp.unseen:
        raise SystemExit(f"{workdir}: not a zero-shot run (data.unseen_classes is empty)")
    manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints, read_only=True)
    state, position = checkpointing.restore(
        manager, jax.eval_shape(lambda: exp.state), exp.state_shardings, step
    )
    manager.close()
    state = factory.evaluation_view(state)
    names = exp.info.class_names
    unseen = np.asarray(exp.unseen)
    seen = ~np.isin(np.arange(len(names)), unseen)
    temperature = float(np.clip(state.params["temperature"], *config.model.temperature_range))
    params_pre = dict(state.params, text_encoder=exp.state.params["text_encoder"])
    class_feats = exp.steps.encode_classes(state, exp.class_tokens)
    class_feats_pre = exp.steps.encode_classes(state.replace(params=params_pre), exp.class_tokens)
    feats, feats_pre = np.asarray(class_feats), np.asarray(class_feats_pre)

    def split(name, class_feats):
        # The evaluation's own pass over a split: per-view logits, here back to cosine similarities.
        _, labels, view_logits = train.predict_split(exp, state, class_feats, name)
        return Split(view_logits * temperature, labels)

    test = split(exp.config.data.test_split, class_feats)
    test_pre = split(exp.config.data.test_split, class_feats_pre)

    def seen_only(s):
        rows = ~np.isin(s.labels, unseen)
        return Split(s.sims[rows], s.labels[rows])

    held_seen = seen_only(split(exp.config.data.calibration_split, class_feats))
    held_pre = seen_only(split(exp.config.data.calibration_split, class_feats_pre))

    p = functools.partial(print, file=out)
    p(f"{workdir}, step {position['step']}; unseen: {', '.join(names[i] for i in unseen)}")
    p(f"temperature {temperature:.4f}")
    moved = np.sum(_unit(feats) * _unit(feats_pre), -1)
    gram, gram_pre = _unit(feats) @ _unit(feats).T, _unit(feats_pre) @ _unit(feats_pre).T
    off = ~np.eye(len(names), dtype=bool) & np.outer(seen, seen)
    p(
        "\ntext features (fine-tuned BERT against pretrained BERT, both through the run's projection)"
    )
    p(
        f"  cosine to its pretrained self: seen names {moved[seen].mean():.3f}, unseen {moved[~seen].mean():.3f}"
    )
    p(
        f"  mean cosine between seen names: {gram[off].mean():.3f} (pretrained BERT {gram_pre[off].mean():.3f})"
    )
    for u in unseen:
        near = np.flatnonzero(seen)[np.argmax(gram[u, seen])]
        p(f"  nearest seen name of {names[u]!r}: {names[near]!r} {gram[u, near]:.3f}")

    p("\nview-averaged cosine similarity, mean (10th to 90th percentile)")
    for title, s in (
        ("seen test clips", test),
        ("unseen test clips", test),
        ("held-out seen clips", held_seen),
    ):
        rows = np.isin(s.labels, unseen) == (title == "unseen test clips")
        m, y = s.mean[rows], s.labels[rows]
        p(f"  {title} ({rows.sum()}):")
        p(f"    own name          {_spread(m[np.arange(len(y)), y])}")
        p(f"    nearest seen name {_spread(m[:, seen].max(-1))}")
        p(f"    nearest unseen    {_spread(m[:, ~seen].max(-1))}")
    rows = np.isin(test.labels, unseen)
    own_pre = test_pre.mean[rows][np.arange(rows.sum()), test_pre.labels[rows]]
    p(f"  unseen test clips' own name with the pretrained BERT's texts {_spread(own_pre)}")
    chosen = np.flatnonzero(seen)[test.mean[rows][:, seen].argmax(-1)]
    counts = sorted(zip(*np.unique(chosen, return_counts=True), strict=True), key=lambda x: -x[1])
    p("  unseen test clips' nearest seen name: " + ", ".join(f"{names[c]} {n}" for c, n in counts))

    keep = float(exp.config.data.calibration_keep_seen)
    p(f"\nGZSL rules, threshold keeping {keep:.0%} of the held-out seen clips: S / U / H, area")
    rules = rule_rows(test, held_seen, (test_pre, held_pre), unseen, temperature, keep)
    for name, s, u, h, area in rules:
        p(f"  {name:40s} {s * 100:5.1f} / {u * 100:5.1f} / {h * 100:5.1f}   {area:.3f}")


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # the report is the output
    probe(FLAGS.workdir, FLAGS.step)


if __name__ == "__main__":
    define_flags()
    app.run(main)
