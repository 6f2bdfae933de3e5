"""A checkpoint that cannot be written (a full disk, a quota) is one clear error that says what is kept."""

import errno
import os
import subprocess
import sys

import pytest

from skclip_jax import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tensorstore's error as orbax re-raises it, shortened.
TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local file "/x/": Failed to write '
    "52240384 bytes to file 18: No space left on device [os_error_code='28']\nsecond line"
)


@pytest.mark.parametrize(
    "error,reason",
    [
        (OSError(errno.ENOSPC, "No space left on device"), os.strerror(errno.ENOSPC)),
        (ValueError(TENSORSTORE_ENOSPC), os.strerror(errno.ENOSPC)),
        (RuntimeError("the bucket went away\ndetails"), "the bucket went away"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_write_failure_names_the_folder_the_reason_and_what_is_kept(tmp_path, error, reason):
    for name in ("1", "5", "7.orbax-checkpoint-tmp", "notes"):
        (tmp_path / name).mkdir()
    message = str(checkpointing.write_failure(error, str(tmp_path)))
    assert message == (
        f"could not write a checkpoint under {tmp_path}: {reason}. The last complete one, step 5, is kept; "
        "free the space (or fix the folder) and run the same command again to resume."
    )
    assert "None was complete yet" in str(checkpointing.write_failure(error, str(tmp_path / "no")))


_FULL_DISK = """
import resource, signal, sys
import jax.numpy as jnp, numpy as np
from skclip_jax import checkpointing
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # no file over 1 MiB: a full disk for 4 MB
manager = checkpointing.make_manager(sys.argv[1])
checkpointing.save(manager, 1, {"w": jnp.ones(1000)}, {"step": 1})
checkpointing.wait_until_finished(manager)
noise = np.random.default_rng(0).normal(size=1 << 20).astype(np.float32)  # 4 MB that do not compress
try:
    checkpointing.save(manager, 2, {"w": jnp.asarray(noise)}, {"step": 2})
    checkpointing.wait_until_finished(manager)
except checkpointing.CheckpointWriteError as e:
    print("error:", e)
manager.close()
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ are Linux's"
)
def test_a_real_save_past_the_disk_limit_raises_and_keeps_the_complete_checkpoint(tmp_path):
    """Real orbax and tensorstore writes in a process whose files may not pass 1 MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    directory = checkpointing.checkpoint_dir(str(tmp_path))
    assert proc.stdout.splitlines()[-1] == (
        f"error: could not write a checkpoint under {directory}: {os.strerror(errno.EFBIG)}. The last complete "
        "one, step 1, is kept; free the space (or fix the folder) and run the same command again to resume."
    )
    assert checkpointing.complete_steps(directory) == [1]


def test_training_stops_with_the_write_error_and_closes_its_files(
    tiny_dataset, tmp_path, monkeypatch
):
    from configs import demo
    from skclip_jax import metrics_io, train

    config = demo.get_config("tiny")
    config.data.data_dir = tiny_dataset.data_dir
    config.total_steps = 2
    config.eval_every_steps = config.log_every_steps = 2
    config.checkpoint_every_steps = 1

    def full_disk(self, step, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(
        checkpointing.CheckpointWriteError, match="No space left on device. None was"
    ):
        train.train_and_evaluate(config, str(tmp_path))
    # The first step's metrics were written and flushed before the failed save: nothing half-written is left.
    assert [r["step"] for r in metrics_io.read_metrics(str(tmp_path))] == [1]
