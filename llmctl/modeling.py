"""Build a model from a transformers config, or load a pretrained one; count parameters."""

from __future__ import annotations

import os
from pathlib import Path


class ModelError(Exception):
    """A model that cannot be built or loaded (one line)."""


# Config keys that hold the context length, per family; filled from data.block_size when building from scratch.
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def causal_lm_config(arch: str, overrides: dict, *, vocab_size: int, block_size: int, eos_id: int, pad_id: int):
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(arch)
    except ValueError:
        from transformers import CONFIG_MAPPING

        known = ", ".join(sorted(k for k in CONFIG_MAPPING.keys() if k in ("gpt2", "llama", "gpt_neox", "mistral",
                                                                            "qwen2", "gemma", "phi", "opt")))
        raise ModelError(f"model.arch: unknown architecture {arch!r} (for example: {known})") from None
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ModelError(f"model.config.{key}: not a setting of the {arch} config ({type(config).__name__})")
        setattr(config, key, value)
    config.vocab_size = vocab_size
    config.bos_token_id = eos_id
    config.eos_token_id = eos_id
    config.pad_token_id = pad_id
    for key in _CONTEXT_KEYS:
        if hasattr(config, key) and key not in overrides:
            setattr(config, key, block_size)
    context = context_length(config)
    if context is not None and context < block_size:
        raise ModelError(f"data.block_size ({block_size}) exceeds the model's context length ({context})")
    return config


def context_length(config) -> int | None:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def build_causal_lm(config, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    try:
        return AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ModelError(f"model.arch: {config.model_type} has no causal-LM head: {exc}") from None


def load_causal_lm(path_or_id: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path_or_id)
    except (OSError, ValueError) as exc:
        raise ModelError(not_found(path_or_id, "model", exc)) from None


def not_found(path_or_id: str, what: str, exc: Exception) -> str:
    if Path(path_or_id).exists():
        text = str(exc).strip()
        return f"{path_or_id}: cannot load {what}: {text.splitlines()[0] if text else type(exc).__name__}"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE")
    if offline:
        return f"{path_or_id}: cannot load {what}: no such local directory, and the hub is offline (HF_HUB_OFFLINE=1)"
    return f"{path_or_id}: cannot load {what}: no such local directory, and it could not be fetched from the hub"


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_parameter_count(config) -> int:
    """Parameters of a model built from `config` without allocating its weights (for --dry-run)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return count_parameters(model)


def flops_per_token(config, n_params: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention term 12 * layers * width * context
    (the PaLM appendix estimate), used for MFU."""
    layers = getattr(config, "n_layer", None) or getattr(config, "num_hidden_layers", 0)
    width = getattr(config, "n_embd", None) or getattr(config, "hidden_size", 0)
    ctx = context_length(config) or 0
    return 6.0 * n_params + 12.0 * layers * width * ctx
