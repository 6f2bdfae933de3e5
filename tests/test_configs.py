"""Per-dataset configs: loading (by path and by import), variants, ablations and validity."""

import inspect
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import custom, demo, hmdb51, ntu60, ntu120, penn_action, ucf101
from skclip_jax.config_lib import variants
from skclip_jax.config_lib.validation import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {
    "hmdb51": hmdb51,
    "ucf101": ucf101,
    "ntu60": ntu60,
    "penn_action": penn_action,
    "demo": demo,
    "custom": custom,
}


def parse_config_flag(path_and_arg: str, *overrides: str) -> ml_collections.ConfigDict:
    """The real command-line path: DEFINE_config_file loads the file by path, then overrides apply."""
    argv = ["prog", f"--config={path_and_arg}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    return fv.config


def test_loaded_by_path_from_another_directory():
    # A fresh interpreter outside the repo: the config imports the installed skclip_jax, nothing edits sys.path.
    script = (
        "from absl import flags\n"
        "from ml_collections import config_flags\n"
        f"argv = ['p', '--config={REPO}/configs/hmdb51.py:split3,cpu', '--config.optim.lr=0.5']\n"
        "fv = flags.FlagValues()\n"
        "config_flags.DEFINE_config_file('config', None, '', flag_values=fv, sys_argv=argv)\n"
        "fv(argv)\n"
        "c = fv.config\n"
        "print(c.data.train_split, c.data.test_split, c.data.clip_len, c.optim.lr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd="/tmp", capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["train3", "test3", "16", "0.5"]


def test_config_files_do_not_edit_sys_path():
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.endswith(".py"):
            with open(os.path.join(REPO, "configs", name), encoding="utf-8") as f:
                assert "sys.path" not in f.read(), name


def test_by_path_and_by_import_agree():
    by_path = parse_config_flag(os.path.join(REPO, "configs/ucf101.py:split2,cpu"))
    by_import = ucf101.get_config("split2,cpu")
    assert by_path.to_dict() == by_import.to_dict()


def test_command_line_overrides_compose_with_variants():
    config = parse_config_flag(
        os.path.join(REPO, "configs/custom.py:cpu,nocsi"),
        "--config.data.data_dir=/data/mine",
        "--config.data.train_split=xsub_train",
        "--config.data.test_split=xsub_test",
        "--config.data.class_names_file=/data/mine/classes.txt",
    )
    assert config.data.data_dir == "/data/mine"
    assert (config.data.train_split, config.data.test_split) == ("xsub_train", "xsub_test")
    assert config.data.class_names_file == "/data/mine/classes.txt"
    assert config.model.csi is False and config.data.clip_len == 16
    validate_config(config)


@pytest.mark.parametrize(
    "module, arg, train, test",
    [
        (hmdb51, None, "train1", "test1"),
        (hmdb51, "split2", "train2", "test2"),
        (ucf101, "split3", "train3", "test3"),
        (ucf101, "split1", "train1", "test1"),
        (ntu60, None, "xsub_train", "xsub_val"),
        (ntu60, "xview", "xview_train", "xview_val"),
        (penn_action, None, "train", "test"),
        (ucf101, "val,split2", "train2[:85%]", "train2[85%:]"),  # carved after the split variant.
        (penn_action, "cpu,val", "train[:85%]", "train[85%:]"),
    ],
)
def test_splits(module, arg, train, test):
    config = module.get_config(arg)
    assert (config.data.train_split, config.data.test_split) == (train, test)


@pytest.mark.parametrize("name, module", DATASETS.items())
def test_every_config_is_valid(name, module):
    config = module.get_config()
    if name == "custom":
        with pytest.raises(ValueError, match="data.data_dir"):
            validate_config(config)  # no default for someone else's data, on purpose.
        config.data.data_dir = "data/mine"
    validate_config(config)
    if name != "demo":
        cpu = module.get_config("cpu")
        cpu.data.data_dir = cpu.data.data_dir or "data/mine"
        validate_config(cpu)


# The cpu recipe measured to learn SSM and CSI (docs/benchmarks.md: Penn Action cpu, the demo): base lr 3e-3,
# the video tower at x3, BERT and its cross-attention at x0.01, BERT dropout off.
LEARNING_CPU_RECIPE = {
    "optim.lr": 3e-3,
    "optim.video_lr_mult": 3.0,
    "optim.text_lr_mult": 0.01,
    "optim.crossattn_lr_mult": 0.01,
    "model.text.dropout": 0.0,
}


@pytest.mark.parametrize("module", [custom, demo, hmdb51, ntu60, ntu120, penn_action, ucf101])
def test_every_cpu_variant_has_the_recipe_that_learns(module):
    """HMDB-51 and UCF-101 once resolved `cpu` to BERT at x1 of 3e-3 (their full-size pacl recipe leaking
    through), where CSI stays at its prior."""
    config = module.get_config() if module is demo else module.get_config("cpu")
    for field, want in LEARNING_CPU_RECIPE.items():
        section, name = field.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        assert node[name] == pytest.approx(want), (module.__name__, field, node[name])


def test_full_size_is_the_paper_recipe_and_cpu_is_small(monkeypatch):
    monkeypatch.delenv(variants.BERT_BASE_ENV, raising=False)
    full = ntu60.get_config()
    assert full.model.text.bert_dir == "pretrained/bert-base-uncased"
    assert (full.data.clip_len, full.data.train_size, full.data.test_size) == (48, 56, 64)
    assert full.model.slowonly.stage_blocks == (4, 6, 3) and full.batch_size == 32
    assert full.data.num_test_clips == 10 and full.optim.lr == 1e-3
    cpu = ntu60.get_config("cpu")
    assert cpu.model.text.bert_dir == "minilm"
    assert cpu.data.clip_len < full.data.clip_len and cpu.data.train_size < full.data.train_size
    assert cpu.model.slowonly.base_channels < full.model.slowonly.base_channels
    # cpu only shrinks sizes: the method (WFI, CSI, SSM, mapping) is untouched.
    for field in ("mapping", "activation", "csi", "ssm_targets", "csi_negatives"):
        assert cpu.model[field] == full.model[field]


def test_bert_base_env_override(monkeypatch):
    monkeypatch.setenv(variants.BERT_BASE_ENV, "/models/bert-base-uncased")
    assert ucf101.get_config().model.text.bert_dir == "/models/bert-base-uncased"
    assert ucf101.get_config("cpu").model.text.bert_dir == "minilm"


def test_penn_action_is_single_person():
    assert penn_action.get_config().data.num_persons == 1
    assert penn_action.get_config("cpu").data.num_persons == 1


@pytest.mark.parametrize(
    "variant, field, value",
    [
        ("residual", "model.mapping", "residual"),
        ("sigmoid", "model.activation", "sigmoid"),
        ("nowfi", "model.activation", "mean"),
        ("nocsi", "model.csi", False),
        ("bert_random", "model.text.regime", "random"),
        ("bert_frozen", "model.text.regime", "frozen"),
        ("bert_finetune", "model.text.regime", "finetune"),
        ("bf16", "model.dtype", "bfloat16"),
        ("allclasses", "model.ssm_targets", "all_classes"),
        ("sample_negatives", "model.csi_negatives", "sample"),
        ("fsdp", "mesh_shape", (1, -1)),
    ],
)
def test_ablation_variants(variant, field, value):
    def get(config, dotted):
        for name in dotted.split("."):
            config = config[name]
        return config

    for module in (ucf101, ntu60, penn_action, demo):
        base = module.get_config()
        config = module.get_config(variant)
        assert get(config, field) == value
        # Exactly the advertised fields change (fsdp: mesh_shape and shard_params).
        changed = {
            k for k, v in _flatten(config.to_dict()).items() if _flatten(base.to_dict()).get(k) != v
        }
        expected = {field, "shard_params"} if variant == "fsdp" else {field}
        if variant == "bert_finetune":
            expected = set()  # the default regime already.
        assert changed == expected, (module.__name__, variant, changed)
        validate_config(config)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_variant_order_and_spaces_do_not_matter():
    a = ucf101.get_config("split2,cpu,nocsi,residual").to_dict()
    b = ucf101.get_config(" residual, nocsi ,cpu,split2,").to_dict()
    assert a == b


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        ucf101.get_config("split1,cpuu")
    message = str(err.value)
    assert "cpuu" in message
    for valid in ("split1", "split2", "split3", "cpu", "residual", "nowfi", "fsdp", "bf16"):
        assert valid in message
    with pytest.raises(ValueError, match="xview"):
        ntu60.get_config("split1")  # a UCF split is not an NTU benchmark.


@pytest.mark.parametrize(
    "module, arg", [(ucf101, "split1,split2"), (ucf101, "sigmoid,nowfi"), (ntu60, "nocsi,nocsi")]
)
def test_conflicting_variants_raise(module, arg):
    with pytest.raises(ValueError, match="at most one"):
        module.get_config(arg)


def test_demo_and_tiny():
    config = demo.get_config()
    assert config.data.data_dir == "data/synthetic" and config.data.generate_synthetic
    assert config.model.text.bert_dir == "minilm" and 0 < config.total_steps <= 1000
    tiny = demo.get_config("tiny")
    assert tiny.total_steps <= 10 and tiny.batch_size == 8
    assert tiny.data.data_dir != config.data.data_dir  # never reuses the bigger dataset.
    validate_config(tiny)
    validate_config(demo.get_config("tiny,nocsi,allclasses"))


def test_table1_sweep():
    runs = []
    ntu60.sweep(lambda **kw: runs.append(kw))
    combos = {(r["config.model.mapping"], r["config.model.activation"]) for r in runs}
    assert combos == {
        ("linear", "softmax"),
        ("linear", "sigmoid"),
        ("residual", "softmax"),
        ("residual", "sigmoid"),
    }
    assert len(runs) == 4 and all(r["config.data.repeat"] == 1 for r in runs)
    # Every key is a real field, so each run is expressible as --config.* overrides.
    for run in runs:
        config = ntu60.get_config()
        config.lock()
        for key, value in run.items():
            *parents, leaf = key.split(".")[1:]
            node = config
            for p in parents:
                node = node[p]
            node[leaf] = value
        validate_config(config)


@pytest.mark.parametrize("arg", [None, "tiny"])
def test_demo_synthetic_kwargs_fit_the_generator(arg):
    # main.py passes data.synthetic as keyword arguments; a renamed parameter must fail here.
    synthetic = pytest.importorskip("data_prep.synthetic")
    kwargs = demo.get_config(arg).data.synthetic.to_dict()
    inspect.signature(synthetic.make_synthetic_dataset).bind("data/x", **kwargs)
