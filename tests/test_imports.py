"""Every library module imports beside every other in one interpreter, and the tools still take their flags.

absl flags are process-global: two modules that both define ``--config`` at import cannot be imported together
(CI once failed on exactly that, ``knn_baseline`` beside ``predict`` in one pytest worker). Only the pure
programs ``main`` and ``bench`` define flags at import; the tools that are also libraries define them in
``define_flags()`` when run as the program.
"""

import json
import pathlib
import pkgutil
import subprocess
import sys

import skclip_jax
from data_prep import synthetic

PROGRAMS_ONLY = {"skclip_jax.main", "skclip_jax.tools.bench"}
REPO = pathlib.Path(__file__).resolve().parents[1]


def _library_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(skclip_jax.__path__, prefix="skclip_jax."):
        if info.name not in PROGRAMS_ONLY:
            names.append(info.name)
    return names


def test_every_library_module_imports_beside_the_others():
    modules = _library_modules()
    assert "skclip_jax.predict" in modules and "skclip_jax.tools.knn_baseline" in modules
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    # Each program beside the libraries: its flags must not collide with theirs.
    for program in sorted(PROGRAMS_ONLY):
        result = subprocess.run(
            [sys.executable, "-c", code + f"importlib.import_module({program!r})\n"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]


def test_the_knn_tool_runs_from_the_command_line(tmp_path):
    """``define_flags()`` runs when the module is the program: the README's 1-NN command prints its JSON line."""
    synthetic.make_synthetic_dataset(
        str(tmp_path), num_classes=4, num_train_per_class=8, num_test_per_class=4, num_persons=1
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "skclip_jax.tools.knn_baseline", "--config=configs/demo.py",
            f"--config.data.data_dir={tmp_path}", "--frames=16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["knn_top1"] > 0.5 and row["mirror"] is True  # chance is 0.25.
