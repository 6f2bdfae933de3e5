"""validate_config: every bad field is named, with its value and a fix; good configs pass."""

import pytest

from skclip_jax.config_lib import default
from skclip_jax.config_lib.validation import validate_config


def valid_config():
    config = default.get_config()
    config.data.data_dir = "data/ucf101"
    return config


def test_default_with_a_data_dir_is_valid():
    validate_config(valid_config())


def _set(config, dotted, value):
    *parents, leaf = dotted.split(".")
    for name in parents:
        config = config[name]
    config[leaf] = value


# (field, bad value, text the message must contain besides the field and value)
CASES = [
    ("data.data_dir", "", "--config.data.data_dir="),
    ("data.train_split", "", "train_split"),
    ("data.clip_len", 0, "positive integer"),
    ("data.clip_len", -48, "positive integer"),
    ("data.train_size", 0, "positive integer"),
    ("data.test_size", -1, "positive integer"),
    ("data.num_persons", 0, "positive integer"),
    ("data.num_test_clips", 0, "positive integer"),
    ("data.repeat", 0, "positive integer"),
    ("data.sigma", 0.0, "sigma"),
    ("data.flip_ratio", 1.5, "[0, 1]"),
    ("data.crop_area", (0.9, 0.5), "lo <= hi"),
    ("data.prompt_template", "a person", "'{}'"),
    ("data.num_workers", -1, ">= 0"),
    ("data.device_prefetch", -1, ">= 0"),
    ("model.slowonly.base_channels", 0, "positive integer"),
    ("model.slowonly.stage_blocks", (4, 0, 3), "positive block counts"),
    ("model.slowonly.inflate", (0, 1), "one entry per stage"),
    ("model.slowonly.temporal_strides", (1, 0, 2), "positive"),
    ("model.slowonly.conv1_kernel", (7, 7), "3 positive sizes"),
    ("model.slowonly.conv_impl", "cudnn", "['auto', 'xla', 'gemm']"),
    ("model.slowonly.batch_norm_impl", "cudnn", "['auto', 'flax', 'fused']"),
    ("model.slowonly.stem_impl", "sparse", "['auto', 'conv', 'patches']"),
    ("model.text.bert_dir", "", "bert-base-uncased"),
    ("model.text.regime", "frozn", "['finetune', 'frozen', 'random']"),
    ("model.text.dropout", 1.0, "[0, 1)"),
    ("model.embed_dim", 0, "positive integer"),
    ("model.mapping", "nonlinear", "['linear', 'residual']"),
    ("model.activation", "relu", "['softmax', 'sigmoid', 'mean']"),
    ("model.ssm_targets", "all", "['batch', 'all_classes']"),
    ("model.csi_negatives", "hardest", "['argmax', 'sample']"),
    ("model.dtype", "float16", "['float32', 'bfloat16']"),
    ("model.csi_weight", -1.0, ">= 0"),
    ("model.temperature_range", (0.5, 0.001), "0 < lo < hi"),
    ("model.temperature_range", (0.0, 0.5), "0 < lo < hi"),
    ("model.init_temperature", 0.9, "inside model.temperature_range"),
    ("optim.lr", 0.0, "> 0"),
    ("optim.lr", -1e-3, "> 0"),
    ("optim.weight_decay", -0.1, ">= 0"),
    ("optim.clip_norm", 0.0, "> 0"),
    ("optim.warmup_epochs", -1.0, ">= 0"),
    ("optim.warmup_ratio", 0.0, "(0, 1]"),
    ("optim.min_lr", 1.0, "[0, optim.lr]"),
    ("batch_size", 0, "positive integer"),
    ("eval_batch_size", -8, "positive integer"),
    ("total_steps", 0, "negative to train for num_epochs"),
    ("log_every_steps", 0, "once per epoch"),
    ("eval_every_steps", 0, "once per epoch"),
    ("checkpoint_every_steps", 0, "once per epoch"),
    ("keep_checkpoints", 0, "positive integer"),
    ("mesh_shape", (8,), "2 entries"),
    ("mesh_shape", (2, 2, 2), "2 entries"),
    ("mesh_shape", (-1, -1), "at most one -1"),
    ("mesh_shape", (0, 1), "positive or -1"),
]


@pytest.mark.parametrize("field, value, text", CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_each_problem_is_reported(field, value, text):
    config = valid_config()
    _set(config, field, value)
    with pytest.raises(ValueError) as err:
        validate_config(config)
    message = str(err.value)
    assert f"config.{field}={value!r}" in message
    assert text in message
    assert "Fix: " in message
    assert "1 problem" in message  # only the broken field is blamed.


def test_num_epochs_checked_only_when_it_is_used():
    config = valid_config()
    config.num_epochs = 0
    with pytest.raises(ValueError, match="num_epochs"):
        validate_config(config)
    config.total_steps = 100  # steps override epochs: num_epochs is then irrelevant.
    validate_config(config)


def test_negative_periods_mean_per_epoch_and_are_valid():
    config = valid_config()
    config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = -1, -1, -1
    validate_config(config)


def test_all_problems_reported_at_once():
    config = valid_config()
    config.data.clip_len = 0
    config.model.mapping = "mlp"
    config.optim.lr = 0.0
    with pytest.raises(ValueError) as err:
        validate_config(config)
    message = str(err.value)
    assert "3 problem(s)" in message
    for field in ("data.clip_len", "model.mapping", "optim.lr"):
        assert field in message


def test_ablation_values_are_accepted():
    for field, value in [
        ("model.mapping", "residual"),
        ("model.activation", "sigmoid"),
        ("model.activation", "mean"),
        ("model.text.regime", "random"),
        ("model.ssm_targets", "all_classes"),
        ("model.csi_negatives", "sample"),
        ("model.dtype", "bfloat16"),
        ("mesh_shape", (1, -1)),
        ("mesh_shape", (2, 4)),
    ]:
        config = valid_config()
        _set(config, field, value)
        validate_config(config)


def test_negative_periods_count_epochs():
    from skclip_jax import train

    assert train.every(100, 78) == 100
    assert train.every(-1, 78) == 78  # once per epoch.
    assert train.every(-5, 78) == 390  # every 5 epochs: the cpu variants evaluate half-way.


def test_low_memory_must_be_a_bool_and_may_be_absent():
    config = valid_config()
    del config.model.slowonly["low_memory"]
    validate_config(config)  # configs written before the field existed: False
    config.model.slowonly.low_memory = "yes"
    with pytest.raises(
        ValueError, match=r"config.model.slowonly.low_memory='yes': must be True or False"
    ):
        validate_config(config)


def test_stem_impl_patches_needs_keypoint_heatmaps_and_may_be_absent():
    config = valid_config()
    del config.model.slowonly["stem_impl"]
    validate_config(config)  # configs written before the field existed: the dense stem
    config.model.slowonly.stem_impl = "patches"
    validate_config(config)
    for field, value, reason in (
        ("data.with_limb", True, "limb heatmaps (data.with_limb=True) are not small windows"),
        (
            "model.slowonly.conv1_kernel",
            (3, 7, 7),
            "the stem kernel (3, 7, 7) is not 1 x odd x odd",
        ),
    ):
        bad = valid_config()
        bad.model.slowonly.stem_impl = "patches"
        _set(bad, field, value)
        with pytest.raises(ValueError) as err:
            validate_config(bad)
        message = str(err.value)
        assert (
            f"config.model.slowonly.stem_impl='patches': 'patches' cannot be used: {reason}"
            in message
        )
        assert "--config.model.slowonly.stem_impl=conv" in message
    # A malformed kernel is its own field's problem, not a crash in the stem's rule.
    bad = valid_config()
    bad.model.slowonly.stem_impl = "patches"
    bad.model.slowonly.conv1_kernel = (7, 7)
    with pytest.raises(ValueError) as err:
        validate_config(bad)
    assert "config.model.slowonly.conv1_kernel=(7, 7): must be 3 positive sizes" in str(err.value)
    assert "stem_impl" not in str(err.value)
