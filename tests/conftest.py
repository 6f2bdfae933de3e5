"""Test-wide setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import os
import tempfile

import pytest

from skclip_jax import host_memory

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One persistent XLA cache for the session's processes (pytest workers and the CLI tests' subprocesses): the
# tiny models compile once, not once per test and per restarted run. Keys include program, options and devices.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"skclip_jax_test_xla_cache_{os.getuid()}"),
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# glibc with huge pages (skclip_jax/host_memory.py) for the processes this one starts (pytest-xdist's workers, the
# CLI tests' subprocesses), not jemalloc even where it is installed: a worker runs hundreds of tests, and jemalloc
# keeping every freed page (the entry points' setting, right for one training run) grew workers past 6-8 GB until
# the kernel's OOM killer ended them. test_host_memory.py tests the jemalloc choice in processes of its own.
os.environ.setdefault(host_memory.ALLOCATOR_SWITCH, "glibc")
os.environ.update(host_memory.this_process_allocator_env() or {})
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 4-class synthetic dataset (3 train and 2 test clips a class, 20 frames), converted once per session."""
    from data_prep import synthetic
    from skclip_jax import input_pipeline

    out = tmp_path_factory.mktemp("tiny_dataset")
    synthetic.make_synthetic_dataset(
        str(out), num_train_per_class=3, num_test_per_class=2, num_classes=4, num_frames=20
    )
    return input_pipeline.load_dataset_info(str(out))


@pytest.fixture(scope="module")
def tokens_and_bert():
    """Four class prompts, a tiny random BERT without dropout and the [ENC] token id (test_train_step, test_ema)."""
    from skclip_jax.models import text

    tokenizer, enc_id = text.load_tokenizer(text.resolve_bert_dir("minilm"))
    names = ["waving hand", "jumping jacks", "squatting", "kicking"]
    tokens = text.tokenize(tokenizer, names, 10)
    bert_cfg = text.tiny_bert_config(len(tokenizer))
    bert_cfg.hidden_dropout_prob = 0.0
    bert_cfg.attention_probs_dropout_prob = 0.0
    return tokens, bert_cfg, enc_id


class _WritesAFile:
    """A pickle payload as a hostile file would carry it: unpickling calls exec, which writes `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


@pytest.fixture
def file_writing_payload(tmp_path):
    """(an object whose unpickling writes a file, that file): what a hostile pickle carries
    (test_data_prep, test_predict)."""
    target = tmp_path / "written_by_the_pickle.txt"
    return _WritesAFile(target), target
