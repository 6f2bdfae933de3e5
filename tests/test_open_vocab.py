"""Open vocabulary: ZSL/GZSL arithmetic by hand, prompt ensembles against loops, class resolution, variants."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ntu60, ntu120, penn_action
from skclip_jax import class_texts, evaluators, factory, steps
from skclip_jax.config_lib import open_vocab
from skclip_jax.config_lib import validation as config_validation
from skclip_jax.models import text

# 4 classes, 2 and 3 unseen; one view per clip, so logits rank like probabilities.
LOGITS = np.array(
    [
        [2.0, 1.0, 3.0, 0.0],  # label 0: all names -> 2 (wrong); seen names {0, 1} -> 0 (right)
        [0.0, 5.0, 1.0, 1.0],  # label 1: all -> 1 (right); seen -> 1 (right)
        [4.0, 0.0, 3.0, 1.0],  # label 2: all -> 0 (wrong); unseen names {2, 3} -> 2 (right)
        [0.0, 0.0, 1.0, 2.0],  # label 3: all -> 3 (right); unseen -> 3 (right)
        [0.0, 0.0, 1.0, 2.0],  # label 2: all -> 3 (wrong); unseen -> 3 (wrong)
    ]
)[:, None, :]
LABELS = np.array([0, 1, 2, 3, 2])


def test_zero_shot_metrics_hand_computed():
    m = evaluators.zero_shot_metrics(LOGITS, LABELS, np.array([3, 2]))
    assert m["zsl_top1"] == pytest.approx(2 / 3)  # clips 2, 3, 4 among {2, 3}: right, right, wrong.
    assert m["gzsl_seen"] == pytest.approx(1 / 2)  # clips 0, 1 among all: wrong, right.
    assert m["gzsl_unseen"] == pytest.approx(1 / 3)  # clips 2, 3, 4 among all: only clip 3.
    assert m["gzsl_h"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # = 0.4
    assert m["gzsl_h"] == pytest.approx(0.4)
    assert m["seen_top1"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in m.values())


def test_zero_shot_softmax_is_taken_per_view_over_the_subset():
    # Class 0 seen, 1 and 2 unseen; the clip is class 1. Restricting the all-class averaged probabilities
    # picks 1 (view 2 dominates); the run's protocol (softmax over {1, 2} per view, then mean) picks 2.
    logits = np.array([[[10.0, 0.0, 2.0], [-10.0, 1.0, 0.0]]])
    p = evaluators.subset_probs(logits, np.array([1, 2]))
    e = np.exp
    want = 0.5 * np.array([1 / (1 + e(2)), e(2) / (1 + e(2))]) + 0.5 * np.array(
        [e(1) / (1 + e(1)), 1 / (1 + e(1))]
    )
    np.testing.assert_allclose(p[0], want, rtol=1e-12)
    all_probs = evaluators.subset_probs(logits, np.arange(3))[0]
    assert all_probs[1] > all_probs[2]
    m = evaluators.zero_shot_metrics(logits, np.array([1]), np.array([1, 2]))
    assert m["zsl_top1"] == 0.0
    assert np.isnan(m["gzsl_seen"]) and np.isnan(m["seen_top1"])  # no seen clip to average.


def _curve_by_sweep(probs, labels, unseen, gammas):
    """(seen, unseen) accuracy at each gamma, predicting every clip by calibrated stacking directly."""
    seen_mask = np.array([c not in unseen for c in range(probs.shape[1])], np.float64)
    preds = (probs[None] - gammas[:, None, None] * seen_mask).argmax(-1)  # [G, N]
    on_seen = np.array([y not in unseen for y in labels])
    right = preds == labels[None]
    return list(zip(right[:, on_seen].mean(-1), right[:, ~on_seen].mean(-1), strict=True))


def test_ausuc_equals_a_dense_sweep_of_calibrated_stacking():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(6) * 0.5, size=30)
    labels = rng.integers(0, 6, size=30)
    unseen = {1, 4}
    seen_best = probs[:, [0, 2, 3, 5]].max(-1)
    d = np.sort(seen_best - probs[:, [1, 4]].max(-1))
    assert np.diff(d).min() > 2e-4  # the grid below steps past every switch one at a time.
    gammas = np.concatenate([[-2.0], np.linspace(-1.0001, 1.0001, 20_003), [2.0]])
    # The curve in gamma order (seen accuracy falls, unseen rises), repeated points dropped; its area by the
    # trapezoid rule along the path.
    points = []
    for p in _curve_by_sweep(probs, labels, unseen, gammas):
        if not points or p != points[-1]:
            points.append(p)
    area = sum((a[0] - b[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:], strict=False))
    seen_acc, unseen_acc = evaluators.seen_unseen_curve(probs, labels, np.array([4, 1]))
    np.testing.assert_allclose(np.stack([seen_acc, unseen_acc], -1), np.array(points), atol=1e-12)
    assert evaluators.ausuc(probs, labels, np.array([4, 1])) == pytest.approx(area, abs=1e-12)
    assert 0.0 < area < 1.0


def test_ausuc_of_perfect_and_of_unseen_blind_models():
    labels = np.array([0, 1, 2, 3])
    perfect = np.eye(4)
    assert evaluators.ausuc(perfect, labels, np.array([2, 3])) == pytest.approx(1.0)
    # Unseen clips rank the other unseen name first: no calibration helps, the area is 0.
    blind = np.array(
        [
            [0.9, 0.05, 0.02, 0.03],
            [0.05, 0.9, 0.02, 0.03],
            [0.5, 0.3, 0.05, 0.15],
            [0.5, 0.3, 0.15, 0.05],
        ]
    )
    assert evaluators.ausuc(blind, labels, np.array([2, 3])) == pytest.approx(0.0)
    m = evaluators.zero_shot_metrics(np.log(perfect + 1e-9)[:, None, :], labels, np.array([2, 3]))
    assert m["gzsl_ausuc"] == pytest.approx(1.0)


def test_harmonic_mean_and_checkpoint_metric():
    assert evaluators.harmonic_mean(0.0, 0.0) == 0.0
    assert evaluators.harmonic_mean(0.6, 0.3) == pytest.approx(0.4)
    plain = {"top1": 0.5}
    assert evaluators.checkpoint_metrics(plain) is plain
    assert evaluators.checkpoint_metrics(None) is None
    assert evaluators.checkpoint_metrics({"top1": 0.9, "zsl_top1": 1.0, "seen_top1": 0.7}) == {
        "top1": 0.7
    }


def test_calibrated_gzsl_against_a_loop():
    rng = np.random.default_rng(5)
    num_classes, unseen = 6, np.array([1, 4])
    test_logits = rng.normal(size=(40, 2, num_classes)) * 2
    test_labels = rng.integers(0, num_classes, size=40)
    cal_logits = rng.normal(size=(20, 2, num_classes)) * 2
    cal_labels = rng.choice([0, 2, 3, 5], size=20)
    m = evaluators.calibrated_gzsl_metrics(
        test_logits, test_labels, cal_logits, cal_labels, unseen, keep_seen=0.8
    )

    def view_mean_probs(logits):
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)).mean(1)

    seen = [0, 2, 3, 5]
    cal_probs = view_mean_probs(cal_logits)
    margins = [max(p[c] for c in seen) - max(p[c] for c in unseen) for p in cal_probs]
    # 80 % of the calibration clips keep a margin above gamma (16 of 20), the rest do not.
    assert sum(d > m["gzsl_cal_gamma"] for d in margins) == 16
    right = {True: [], False: []}
    for p, y in zip(view_mean_probs(test_logits), test_labels, strict=True):
        scores = [p[c] - (0.0 if c in unseen else m["gzsl_cal_gamma"]) for c in range(num_classes)]
        right[bool(y in unseen)].append(int(np.argmax(scores)) == y)
    assert m["gzsl_cal_seen"] == pytest.approx(np.mean(right[False]))
    assert m["gzsl_cal_unseen"] == pytest.approx(np.mean(right[True]))
    assert m["gzsl_cal_h"] == pytest.approx(
        evaluators.harmonic_mean(np.mean(right[False]), np.mean(right[True]))
    )
    cal_pred = [seen[int(np.argmax(view_mean_probs(lg[None, :, seen])[0]))] for lg in cal_logits]
    assert m["calibration_seen_top1"] == pytest.approx(np.mean(np.array(cal_pred) == cal_labels))
    # Uncalibrated GZSL is the same model at gamma = 0: calibration trades seen for unseen accuracy.
    plain = evaluators.zero_shot_metrics(test_logits, test_labels, unseen)
    if m["gzsl_cal_gamma"] > 0:
        assert m["gzsl_cal_unseen"] >= plain["gzsl_unseen"]
    with pytest.raises(ValueError, match="seen-class clips"):
        evaluators.calibrated_gzsl_metrics(
            test_logits, test_labels, cal_logits, np.full(20, 4), unseen
        )


def test_gated_gzsl_against_a_loop():
    """The gate reads each clip's cosine to its nearest seen name (logits x temperature, views averaged), keeps
    keep_seen of the calibration clips above its threshold, and sends every other clip to the unseen names."""
    rng = np.random.default_rng(11)
    num_classes, unseen, seen, temperature = 6, np.array([1, 4]), [0, 2, 3, 5], 0.07
    test_logits = rng.uniform(-1, 1, size=(50, 3, num_classes)) / temperature
    test_labels = rng.integers(0, num_classes, size=50)
    cal_logits = rng.uniform(-1, 1, size=(20, 3, num_classes)) / temperature
    m = evaluators.gated_gzsl_metrics(
        test_logits, test_labels, cal_logits, unseen, temperature, keep_seen=0.75
    )

    def nearest_seen(logits):
        return max(np.mean([view[c] * temperature for view in logits]) for c in seen)

    def choose(logits, classes):
        p = [np.exp(v[classes] - v[classes].max()) for v in logits]
        return classes[int(np.argmax(np.mean([q / q.sum() for q in p], axis=0)))]

    # 75 % of the calibration clips (15 of 20) reach the threshold.
    assert sum(nearest_seen(lg) >= m["gzsl_gate_threshold"] for lg in cal_logits) == 15
    sims = [nearest_seen(lg) for lg in test_logits]

    def accuracies(threshold):
        right = {True: [], False: []}
        for lg, sim, y in zip(test_logits, sims, test_labels, strict=True):
            classes = np.array(seen) if sim >= threshold else unseen
            right[bool(y in unseen)].append(choose(lg, classes) == y)
        return np.mean(right[False]), np.mean(right[True])

    s, u = accuracies(m["gzsl_gate_threshold"])
    assert (m["gzsl_gate_seen"], m["gzsl_gate_unseen"]) == pytest.approx((s, u))
    assert m["gzsl_gate_h"] == pytest.approx(evaluators.harmonic_mean(s, u))
    # The area over every threshold: a dense sweep between every pair of neighbouring similarities.
    edges = np.sort(np.unique(sims))
    thresholds = np.concatenate([[-np.inf], (edges[1:] + edges[:-1]) / 2, [np.inf]])
    points = []
    for p in (accuracies(t) for t in thresholds):
        if not points or p != points[-1]:
            points.append(p)
    area = sum((a[0] - b[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:], strict=False))
    assert m["gzsl_gate_ausuc"] == pytest.approx(area, abs=1e-12)
    assert 0.0 < area < 1.0


def test_carve_split_percent_arithmetic():
    from skclip_jax import input_pipeline

    assert input_pipeline.carve_split("train", 10) == ("train[:90%]", "train[90%:]")
    assert input_pipeline.carve_split("xsub_train", 25) == ("xsub_train[:75%]", "xsub_train[75%:]")
    assert input_pipeline.carve_split("train[:85%]", 10) == ("train[:75%]", "train[75%:85%]")
    assert input_pipeline.carve_split("train[20%:]", 10) == ("train[20%:90%]", "train[90%:]")
    for bad in ("train[:100]", "train[:5%]", "train[a:b]"):
        with pytest.raises(ValueError, match="cannot carve"):
            input_pipeline.carve_split(bad, 10)
    config = penn_action.get_config("zsl1")
    resolved = input_pipeline.with_calibration_split(config)
    assert resolved.data.calibration_split == "train[90%:]"
    assert (
        input_pipeline.with_calibration_split(penn_action.get_config()).data.calibration_split == ""
    )


def test_checkpoint_metric_prefers_held_out_calibration_clips():
    m = {"top1": 0.9, "seen_top1": 0.7, "calibration_seen_top1": 0.6}
    assert evaluators.checkpoint_metrics(m) == {"top1": 0.6}


def test_zero_shot_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="view_logits"):
        evaluators.zero_shot_metrics(LOGITS[:, 0], LABELS, [2])
    with pytest.raises(ValueError, match="unseen"):
        evaluators.zero_shot_metrics(LOGITS, LABELS, [7])


NAMES = ("jump_rope", "squat", "tennis serve")


def test_resolve_classes_by_name_or_index():
    assert class_texts.resolve_classes(["Tennis Serve", "jump rope"], NAMES) == (0, 2)
    assert class_texts.resolve_classes([1, "squat"], NAMES) == (1,)
    assert class_texts.resolve_classes((), NAMES) == ()
    with pytest.raises(ValueError, match="'skip' is not a class"):
        class_texts.resolve_classes(["skip"], NAMES)
    with pytest.raises(ValueError, match="outside"):
        class_texts.resolve_classes([3], NAMES)
    with pytest.raises(ValueError, match="every class"):
        class_texts.resolve_classes([0, 1, 2], NAMES)


def test_class_texts_templates_then_descriptions(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"jump rope": ["skipping over a rope"], "squat": "bending knees"}))
    desc = class_texts.load_descriptions(str(path), NAMES)
    texts = class_texts.class_texts(NAMES, ("{}", "a person {}."), desc)
    assert texts == [
        ["jump rope", "a person jump rope.", "skipping over a rope"],
        ["squat", "a person squat.", "bending knees"],
        ["tennis serve", "a person tennis serve."],
    ]
    path.write_text(json.dumps({"juggling": ["x"]}))
    with pytest.raises(ValueError, match=r"d\.json: 'juggling' is not one of"):
        class_texts.load_descriptions(str(path), NAMES)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        class_texts.load_descriptions(str(path), NAMES)


def test_shipped_penn_descriptions_cover_every_class():
    config = penn_action.get_config("descriptions")
    names = tuple(open("data_prep/class_names/penn_action.txt").read().split("\n")[:15])
    desc = class_texts.load_descriptions(config.data.class_descriptions_file, names)
    assert sorted(desc) == sorted(names)
    assert all(len(d) >= 2 for d in desc.values())


def test_ensemble_features_match_a_loop():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 4, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], np.float32)
    got = np.asarray(class_texts.ensemble_features(jnp.asarray(feats), jnp.asarray(mask)))
    for c in range(3):
        unit = [feats[c, k] / np.linalg.norm(feats[c, k]) for k in range(4) if mask[c, k]]
        mean = np.mean(unit, axis=0)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)


def test_draw_prompts_picks_real_texts_only_and_is_seeded():
    ids = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    tokens = {
        "input_ids": jnp.asarray(ids),
        "attention_mask": jnp.ones((3, 4, 2), jnp.int32),
        "prompt_mask": jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], jnp.float32),
    }
    seen = [set() for _ in range(3)]
    for step in range(200):
        out = class_texts.draw_prompts(tokens, jax.random.fold_in(jax.random.key(0), step))
        assert out["input_ids"].shape == (3, 2)
        for c in range(3):
            seen[c].add(int(out["input_ids"][c, 0]) // 2 - 4 * c)
    assert seen == [{0, 1, 2}, {0}, {0, 1}]
    a = class_texts.draw_prompts(tokens, jax.random.key(5))
    b = class_texts.draw_prompts(tokens, jax.random.key(5))
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    plain = {"input_ids": ids[:, 0], "attention_mask": ids[:, 0]}
    assert class_texts.draw_prompts(plain, jax.random.key(0))["input_ids"] is plain["input_ids"]


@pytest.fixture(scope="module")
def tokenizer_and_model():
    tokenizer, enc_id = text.load_tokenizer(text.resolve_bert_dir("minilm"))
    from skclip_jax.config_lib import default

    config = default.get_config()
    config.model.slowonly.base_channels = 4
    config.model.slowonly.stage_blocks = (1, 1, 1)
    config.model.embed_dim = 16
    model = factory.build_model(config, text.tiny_bert_config(len(tokenizer)), enc_id)
    params = model.init(
        jax.random.key(0),
        jnp.zeros((1, 4, 16, 16, 17)),
        jnp.zeros((1, 8), jnp.int32),
        jnp.ones((1, 8), jnp.int32),
    )
    return tokenizer, model, params


def test_encode_classes_averages_templates_like_a_loop(tokenizer_and_model):
    tokenizer, model, variables = tokenizer_and_model
    state = factory.TrainState(
        step=0, apply_fn=None, params=variables["params"], tx=None, opt_state=None, batch_stats={}
    )
    texts = class_texts.class_texts(NAMES, ("{}", "a person {}.", "a video of someone {}."))
    texts[1] = texts[1][:1]  # a class with fewer texts: padded and masked.
    tokens = class_texts.tokenize_class_texts(tokenizer, texts, 12)
    assert tokens["input_ids"].shape == (3, 3, 12)
    got = np.asarray(steps.encode_classes(state, tokens, model=model))
    for c, class_list in enumerate(texts):
        single = text.tokenize(tokenizer, class_list, 12)
        feats = np.asarray(steps.encode_classes(state, single, model=model))
        unit = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
        mean = unit.mean(0)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), rtol=1e-4, atol=1e-5)
    one = class_texts.tokenize_class_texts(tokenizer, [[t[0]] for t in texts], 12)
    assert one["input_ids"].shape == (3, 12) and "prompt_mask" not in one


def test_zero_shot_variants():
    c = ntu60.get_config("zsl55_5")
    assert c.data.unseen_classes == (10, 11, 19, 26, 56)
    c = ntu60.get_config("xview,zsl48_12,cpu")
    assert c.data.unseen_classes == (3, 5, 9, 12, 15, 40, 42, 47, 51, 56, 58, 59)
    assert c.data.train_split == "xview_train"
    c = ntu120.get_config("zsl110_10")
    assert c.data.unseen_classes == (4, 13, 37, 43, 49, 65, 88, 95, 99, 106)
    assert (c.data.train_split, c.data.test_split) == ("xsub_train", "xsub_val")
    c = ntu120.get_config("xset,zsl96_24")
    assert len(c.data.unseen_classes) == 24 and c.data.test_split == "xset_val"
    c = penn_action.get_config("zsl2,cpu,templates")
    assert c.data.unseen_classes == ("baseball swing", "pushup", "strum guitar")
    assert c.data.prompt_templates == open_vocab.TEMPLATES
    config_validation.validate_config(c)
    names = open("data_prep/class_names/penn_action.txt").read().split("\n")
    for variant in ("zsl1", "zsl2"):
        unseen = penn_action.get_config(variant).data.unseen_classes
        assert len(class_texts.resolve_classes(unseen, [n for n in names if n])) == 3
    assert ntu60.get_config("").data.unseen_classes == ()  # default unchanged.


def test_ntu120_class_names_extend_ntu60():
    ntu60_names = open("data_prep/class_names/ntu60.txt").read().splitlines()
    ntu120_names = open("data_prep/class_names/ntu120.txt").read().splitlines()
    assert len(ntu120_names) == 120 and len(set(ntu120_names)) == 120
    assert ntu120_names[:60] == ntu60_names
    assert ntu120_names[60] == "putting on headphone" and ntu120_names[119].startswith("finger")
    # Anchors of the official A61-A120 list (checked line by line against it; ours are its gerund forms).
    assert ntu120_names[64] == "tennis bat swing"  # A65
    assert ntu120_names[79] == "squatting down"  # A80 "squat down"
    assert ntu120_names[98] == "running on the spot"  # A99
    assert ntu120_names[105] == "hitting other person with something"  # A106
    assert ntu120_names[111] == "high-five"  # A112


def test_validation_names_bad_open_vocab_fields():
    c = penn_action.get_config("")
    c.data.prompt_templates = ("a person",)
    c.data.unseen_classes = (-1,)
    c.data.calibration_percent = 60
    c.data.calibration_keep_seen = 1.0
    with pytest.raises(ValueError) as e:
        config_validation.validate_config(c)
    for field in (
        "data.prompt_templates",
        "data.unseen_classes",
        "data.calibration_percent",
        "data.calibration_keep_seen",
    ):
        assert field in str(e.value), field
