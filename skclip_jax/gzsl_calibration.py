"""A zero-shot run's GZSL calibration, as `predict` and the API apply it to a class list that mixes the names the
run trained on with new ones.

A model trained on some names scores them higher than any new name, so a new name rarely wins beside them
(generalized zero-shot). Calibrated stacking (Chao et al., 2016) lowers the trained names' probabilities by an
offset gamma. A zero-shot run chooses gamma at every evaluation on held-out clips of its training classes
(`evaluators.calibrated_gzsl_metrics`) and records it in that step's evaluation row of metrics.jsonl
(`gzsl_cal_gamma`); `Calibration.for_run` reads the one of the restored step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from skclip_jax import class_texts, metrics_io


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The offset of one checkpoint and the names it applies to (the classes the run trained on)."""

    gamma: float
    step: int
    keep_seen: float
    trained_names: tuple[str, ...]

    @classmethod
    def for_run(
        cls, config, workdir: str, run_classes: Sequence[str], step: int
    ) -> Calibration | None:
        """The calibration recorded for `step` of the run in `workdir`; None for a run that holds no class out
        (it has no held-out clips to choose an offset on) or a step that was never evaluated with one."""
        unseen = class_texts.resolve_classes(config.data.get("unseen_classes", ()), run_classes)
        if not unseen:
            return None
        rows = [
            r
            for r in metrics_io.read_metrics(workdir)
            if r.get("kind") == "eval" and r["step"] == step and "gzsl_cal_gamma" in r
        ]
        if not rows:
            return None
        trained = tuple(n for i, n in enumerate(run_classes) if i not in unseen)
        return cls(
            gamma=float(rows[-1]["gzsl_cal_gamma"]),
            step=step,
            keep_seen=float(config.data.get("calibration_keep_seen", 0.95)),
            trained_names=trained,
        )

    def trained_mask(self, class_names: Sequence[str]) -> np.ndarray | None:
        """bool [L]: which of `class_names` the run trained on; None when the list holds no new name (nothing
        to calibrate: the offset would lower every name alike) or no trained name."""
        trained = {_key(n) for n in self.trained_names}
        mask = np.array([_key(n) in trained for n in class_names], bool)
        return mask if 0 < mask.sum() < mask.size else None

    def describe(self) -> str:
        return (
            f"GZSL calibration: the trained names' probabilities are lowered by {self.gamma:.4f}, the offset "
            f"the run chose at step {self.step} to keep {self.keep_seen:.0%} of its held-out training-class "
            "clips on a trained name"
        )


def apply(probs: np.ndarray, mask: np.ndarray | None, gamma: float) -> np.ndarray:
    """Calibrated stacking: probs [..., L] with gamma subtracted where mask [L] is set (the trained names)."""
    if mask is None:
        return probs
    return np.asarray(probs) - gamma * np.asarray(mask, np.asarray(probs).dtype)


def _key(name: str) -> str:
    """Names compare as the text the model reads (underscores as spaces, any case)."""
    return class_texts.class_name_text(name).strip().lower()
