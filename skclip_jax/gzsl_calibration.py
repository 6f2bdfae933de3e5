"""A zero-shot run's seen/unseen gate, as `predict` and the API apply it to a class list that mixes the names the
run trained on with new ones.

A model trained on some names scores them higher than any new name, so a new name rarely wins beside them
(generalized zero-shot). The gate asks first whether the clip is one of the trained actions at all: a clip whose
cosine similarity to its nearest trained name is below a threshold is ranked among the new names, any other among
the trained ones (the outlier gate of Socher et al., 2013). A zero-shot run chooses the threshold at every evaluation
on held-out clips of its training classes (`evaluators.gated_gzsl_metrics`) and records it in that step's evaluation
row of metrics.jsonl (`gzsl_gate_threshold`); `Calibration.for_run` reads the one of the restored step.
docs/zero_shot.md says why a gate on the similarity, and not an offset on the probabilities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from skclip_jax import class_texts, evaluators, metrics_io


@dataclasses.dataclass(frozen=True)
class Gate:
    """What the gate decided for one clip: its cosine similarity to its nearest trained name (averaged over its
    views), the threshold, and whether it was ranked among the trained names (else among the new names)."""

    similarity: float
    threshold: float
    trained: bool

    def record(self) -> dict:
        return {
            "similarity": self.similarity,
            "threshold": self.threshold,
            "ranked_among": "trained names" if self.trained else "new names",
        }


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The gate threshold of one checkpoint and the names it applies to (the classes the run trained on)."""

    threshold: float
    step: int
    keep_seen: float
    trained_names: tuple[str, ...]

    @classmethod
    def for_run(
        cls, config, workdir: str, run_classes: Sequence[str], step: int
    ) -> Calibration | None:
        """The gate recorded for `step` of the run in `workdir`; None for a run that holds no class out (it has
        no held-out clips to set a threshold on) or a step that was never evaluated with one."""
        unseen = class_texts.resolve_classes(config.data.get("unseen_classes", ()), run_classes)
        if not unseen:
            return None
        rows = [
            r
            for r in metrics_io.read_metrics(workdir)
            if r.get("kind") == "eval" and r["step"] == step and "gzsl_gate_threshold" in r
        ]
        if not rows:
            return None
        trained = tuple(n for i, n in enumerate(run_classes) if i not in unseen)
        return cls(
            threshold=float(rows[-1]["gzsl_gate_threshold"]),
            step=step,
            keep_seen=float(config.data.get("calibration_keep_seen", 0.95)),
            trained_names=trained,
        )

    def trained_mask(self, class_names: Sequence[str]) -> np.ndarray | None:
        """bool [L]: which of `class_names` the run trained on; None when the list holds no new name or no
        trained name (nothing to gate: every name is on one side)."""
        trained = {_key(n) for n in self.trained_names}
        mask = np.array([_key(n) in trained for n in class_names], bool)
        return mask if 0 < mask.sum() < mask.size else None

    def describe(self) -> str:
        return (
            "GZSL gate: a clip whose similarity to its nearest trained name is below "
            f"{self.threshold:.4f} (the threshold the run chose at step {self.step} to keep "
            f"{self.keep_seen:.0%} of its held-out training-class clips on the trained names) is ranked among "
            "the new names; each clip's scores are probabilities among the names it was ranked with"
        )


def view_mean_softmax(view_logits: np.ndarray) -> np.ndarray:
    """float [L]: softmax over the names of each view's logits [V, L], averaged over the views."""
    return evaluators.subset_probs(view_logits[None], np.arange(view_logits.shape[-1]))[0]


def gated(
    view_logits: np.ndarray, temperature: float, mask: np.ndarray, threshold: float
) -> tuple[np.ndarray, Gate]:
    """The gate on one clip, by the evaluation's own rule (`evaluators.gated_gzsl_metrics`): (probs [L], its
    decision).

    Args:
      view_logits: [V, L] similarity / temperature of each view against every name.
      temperature: the run's temperature.
      mask: bool [L], the trained names.
      threshold: the run's gate threshold (a cosine similarity).

    Returns:
      probs: the softmax over the side the gate chose (views averaged, as the evaluation), 0 on the other side;
      the decision.
    """
    view_logits = np.asarray(view_logits, np.float64)
    new_names = np.flatnonzero(~mask)
    similarity = float(
        evaluators.nearest_seen_similarity(view_logits[None], new_names, temperature)[0]
    )
    trained = similarity >= threshold
    side = np.flatnonzero(mask) if trained else new_names
    probs = np.zeros(view_logits.shape[-1])
    probs[side] = evaluators.subset_probs(view_logits[None], side)[0]
    return probs, Gate(similarity, float(threshold), bool(trained))


def _key(name: str) -> str:
    """Names compare as the text the model reads (underscores as spaces, any case)."""
    return class_texts.class_name_text(name).strip().lower()
