"""Class texts for an open vocabulary: prompt templates, class descriptions, held-out (unseen) classes.

A class is described by one or more texts: every prompt template filled with its name ("a person {}.",
"{}"), plus the descriptions of `data.class_descriptions_file` for that class. Its text feature is the
L2-normalised mean of the normalised features of its texts (CLIP's prompt ensemble; big_vision's
`discriminative_classifier`). With one template and no descriptions, a class has one text and the tokens
keep their plain [L, S] shape, so the paper's runs are unchanged; otherwise the tokens are [L, K, S] with a
`prompt_mask` [L, K] (K = the most texts of any class; padded slots repeat the class's first text).

During training a step draws one text per class (seeded by the step's key, so resume is exact): see
`draw_prompts`. `resolve_classes` turns `data.unseen_classes` (names or indices) into sorted indices.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from skclip_jax import wfi

# Folded into a step's key to draw its prompts: a stream of its own, so the other draws of the step
# (dropout, CSI sampling) are the same whether templates are on or off.
PROMPT_RNG_SALT = 0x70726F6D


def templates_of(data_config) -> tuple[str, ...]:
    """`data.prompt_templates` when set, else `(data.prompt_template,)`."""
    templates = tuple(data_config.get("prompt_templates", ()) or ())
    return templates if templates else (data_config.prompt_template,)


def class_name_text(name: str) -> str:
    """Natural text for a class name: underscores become spaces ("jumping_jacks" -> "jumping jacks")."""
    return name.replace("_", " ")


def load_descriptions(path: str, class_names: Sequence[str]) -> dict[str, list[str]]:
    """Reads a {class name: [description, ...]} JSON file, checking it against the class list.

    Names are matched after `class_name_text` on both sides, so "jump_rope" and "jump rope" agree.
    Classes missing from the file simply get no descriptions.

    Raises:
      FileNotFoundError / ValueError naming the file and the problem (bad JSON, wrong types, unknown class).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.class_descriptions_file={path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: expected a JSON object {{class name: [description, ...]}}, got {type(raw).__name__}"
        )
    known = {class_name_text(n): n for n in class_names}
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        if class_name_text(key) not in known:
            raise ValueError(
                f"{path}: {key!r} is not one of the {len(class_names)} class names "
                f"({', '.join(sorted(known))})"
            )
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{path}: {key!r} must map to a list of non-empty strings")
        out[known[class_name_text(key)]] = [v.strip() for v in value]
    return out


def class_texts(
    class_names: Sequence[str],
    templates: Sequence[str],
    descriptions: Mapping[str, Sequence[str]] | None = None,
) -> list[list[str]]:
    """The texts of every class: each template filled with its name, then its descriptions (as written)."""
    if not templates:
        raise ValueError("at least one prompt template is needed")
    descriptions = descriptions or {}
    return [
        [t.format(class_name_text(name)) for t in templates] + list(descriptions.get(name, ()))
        for name in class_names
    ]


def texts_from_config(data_config, class_names: Sequence[str]) -> list[list[str]]:
    """class_texts() with the config's templates and (optional) descriptions file."""
    path = data_config.get("class_descriptions_file", "")
    descriptions = load_descriptions(path, class_names) if path else None
    return class_texts(class_names, templates_of(data_config), descriptions)


def tokenize_class_texts(tokenizer, texts: Sequence[Sequence[str]], max_len: int) -> dict:
    """Tokens of every class's texts: [L, S] for one text a class, else [L, K, S] with a prompt_mask [L, K].

    Args:
      tokenizer: from `models.text.load_tokenizer`.
      texts: L lists of texts (at least one each).
      max_len: token length S (texts are padded or truncated to it).

    Returns:
      Host NumPy arrays {"input_ids", "attention_mask"[, "prompt_mask"]}.
    """
    from skclip_jax.models import text  # the only importer of transformers.

    if any(len(t) == 0 for t in texts):
        raise ValueError("every class needs at least one text")
    k = max(len(t) for t in texts)
    if k == 1:
        return text.tokenize(tokenizer, [t[0] for t in texts], max_len)
    padded = [list(t) + [t[0]] * (k - len(t)) for t in texts]
    flat = text.tokenize(tokenizer, [s for t in padded for s in t], max_len)
    out = {key: v.reshape(len(texts), k, max_len) for key, v in flat.items()}
    out["prompt_mask"] = np.array([[i < len(t) for i in range(k)] for t in texts], np.float32)
    return out


def token_lengths(tokenizer, texts: Sequence[Sequence[str]]) -> list[int]:
    """Every text's length in tokens, with [CLS] and [SEP], untruncated."""
    return [len(ids) for ids in tokenizer([s for t in texts for s in t])["input_ids"]]


def count_truncated(tokenizer, texts: Sequence[Sequence[str]], max_len: int) -> int:
    """How many texts are longer than max_len tokens (with [CLS] and [SEP]) and so get cut."""
    return sum(n > max_len for n in token_lengths(tokenizer, texts))


def fitting_length(
    tokenizer, texts: Sequence[Sequence[str]], min_len: int, limit: int = 512
) -> int:
    """The token length that holds every text whole (with [CLS] and [SEP]): at least ``min_len``, at most
    ``limit`` (BERT's position table). Open-vocabulary scoring uses it so that a user's longer action name is
    not cut to the training run's ``data.max_text_len``; padding is masked, so a longer length changes nothing
    for shorter texts."""
    longest = max(token_lengths(tokenizer, texts), default=0)
    return min(max(min_len, longest), limit)


def padded_length(tokenizer, texts: Sequence[Sequence[str]], max_len: int) -> int:
    """The token length a run pads its class texts to: its longest text, capped at ``max_len``.

    Padding is masked, so it changes no feature, but the text tower and every CSI fusion pass pay for each
    padded position: the demo's class names are a few tokens, and padding them to 10 made its whole train step
    measurably slower (`skclip_jax.tools.bench`). Fixed per run, so it compiles once. At least 2 tokens: [CLS]
    and [SEP].
    """
    return fitting_length(tokenizer, texts, min_len=2, limit=max_len)


def tokens_for(tokenizer, texts: Sequence[Sequence[str]], max_len: int) -> dict:
    """tokenize_class_texts at ``padded_length``, with a warning when texts are cut to max_len."""
    truncated = count_truncated(tokenizer, texts, max_len)
    if truncated:
        logging.warning(
            "%d class texts are longer than data.max_text_len=%d tokens and are cut",
            truncated,
            max_len,
        )
    length = padded_length(tokenizer, texts, max_len)
    logging.info(
        "%d class texts padded to %d tokens (the longest; data.max_text_len=%d)",
        sum(len(t) for t in texts),
        length,
        max_len,
    )
    return tokenize_class_texts(tokenizer, texts, length)


def seen_classes(num_classes: int, unseen: Sequence[int]) -> tuple[int, ...]:
    """The classes a run trains on, in label order."""
    return tuple(c for c in range(num_classes) if c not in set(unseen))


def run_tokens(
    data_config, class_names: Sequence[str], tokenizer
) -> tuple[dict, dict | None, tuple[int, ...]]:
    """A run's class tokens: (all classes, for evaluation; the seen classes only, for training, or None
    when no class is held out; the unseen class indices)."""
    tokens = tokens_for(
        tokenizer, texts_from_config(data_config, class_names), data_config.max_text_len
    )
    unseen = resolve_classes(data_config.get("unseen_classes", ()), class_names)
    if not unseen:
        return tokens, None, ()
    logging.info(
        "Zero-shot run: %d unseen classes held out of training (%s)",
        len(unseen),
        ", ".join(class_names[c] for c in unseen),
    )
    seen = seen_classes(len(class_names), unseen)
    return tokens, select_classes(tokens, seen), unseen


def select_classes(class_tokens: Mapping[str, Any], indices: Sequence[int]) -> dict:
    """The rows of `indices` (class axis first) of every token array."""
    idx = np.asarray(indices, np.int64)
    return {k: np.asarray(v)[idx] for k, v in class_tokens.items()}


def ensemble_features(feats: jax.Array, prompt_mask: jax.Array) -> jax.Array:
    """Class features from the features of their texts: normalise, masked mean over texts, normalise.

    Args:
      feats: [L, K, E] text features.
      prompt_mask: [L, K], 1 for a real text, 0 for padding.

    Returns:
      [L, E] unit-norm class features.
    """
    unit = wfi.l2_normalize(feats.astype(jnp.float32))
    w = prompt_mask.astype(jnp.float32)
    mean = jnp.einsum("lk,lke->le", w, unit) / jnp.maximum(w.sum(-1, keepdims=True), 1.0)
    return wfi.l2_normalize(mean)


def draw_prompts(class_tokens: Mapping[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
    """One text per class for a training step; plain [L, S] tokens pass through unchanged.

    Args:
      class_tokens: {"input_ids", "attention_mask": [L, K, S], "prompt_mask": [L, K]} or [L, S] tokens.
      rng: the step's key (the salt keeps this draw independent of the step's other draws).

    Returns:
      {"input_ids", "attention_mask"}: [L, S], text k_l ~ uniform over class l's real texts.
    """
    if class_tokens["input_ids"].ndim == 2:
        return dict(class_tokens)
    counts = jnp.sum(class_tokens["prompt_mask"], axis=-1)  # [L]
    u = jax.random.uniform(jax.random.fold_in(rng, PROMPT_RNG_SALT), counts.shape)
    pick = jnp.minimum(jnp.floor(u * counts), counts - 1).astype(jnp.int32)  # [L]
    rows = jnp.arange(counts.shape[0])
    return {
        "input_ids": class_tokens["input_ids"][rows, pick],
        "attention_mask": class_tokens["attention_mask"][rows, pick],
    }


def resolve_classes(
    spec: Sequence[str | int], class_names: Sequence[str], field: str = "data.unseen_classes"
) -> tuple[int, ...]:
    """Class names (underscores or spaces, any case) or 0-based indices -> sorted unique indices.

    Raises:
      ValueError naming the field and the entry that matches no class, or a split that leaves no class.
    """
    by_name = {class_name_text(n).lower(): i for i, n in enumerate(class_names)}
    out = set()
    for entry in spec:
        if isinstance(entry, bool):
            raise ValueError(f"config.{field}: {entry!r} is neither a class name nor an index")
        if isinstance(entry, int | np.integer):
            if not 0 <= int(entry) < len(class_names):
                raise ValueError(
                    f"config.{field}: index {entry} is outside [0, {len(class_names)}) "
                    f"(the dataset has {len(class_names)} classes)"
                )
            out.add(int(entry))
        elif isinstance(entry, str) and class_name_text(entry).strip().lower() in by_name:
            out.add(by_name[class_name_text(entry).strip().lower()])
        else:
            raise ValueError(
                f"config.{field}: {entry!r} is not a class of the dataset; its classes are "
                f"{', '.join(class_names)}"
            )
    if len(out) >= len(class_names):
        raise ValueError(f"config.{field} holds out every class: nothing is left to train on")
    return tuple(sorted(out))
