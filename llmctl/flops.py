"""Training FLOPs per token and per-GPU peak throughput, for model FLOPs utilisation (MFU).

MFU = (FLOPs the model needs per token x tokens per second) / (peak FLOP/s of the hardware).
The FLOPs estimate follows the PaLM paper (Chowdhery et al. 2022, appendix B):

    flops_per_token = 6 * N + 12 * L * H * Q * T

N is the number of weights that take part in a matrix product per token, L the number of attention
layers, H * Q the total width of the attention heads and T the sequence length. The 6 is 2 FLOPs per
multiply-add times 3 for forward + backward (the backward pass computes gradients for both activations
and weights, twice the forward). The second term is QK^T and AV over the whole sequence (no discount for
causal masking, as in PaLM), which N does not see because those products have no weights.

Nothing heavy is imported at module level: the CLI imports this module on every start, and torch /
transformers are only needed once a model exists.
"""

from __future__ import annotations

import re
from typing import Any

# Precisions a peak is listed for. The key is the precision the matrix products actually run in, not the
# dtype the weights are stored in.
PRECISIONS = ("bf16", "fp16", "tf32", "fp32")


# --------------------------------------------------------------------------------------------------------
# FLOPs per token
# --------------------------------------------------------------------------------------------------------

def _is_conv1d(module: Any) -> bool:
    """transformers' Conv1D (GPT-2, GPT-J-style checkpoints) is a Linear with a transposed weight."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers missing or moved: no such modules can exist in the model then
        return False
    return isinstance(module, Conv1D)


def matmul_parameters(model: Any) -> int:
    """Weights that take part in a matrix product per token: every Linear and transformers Conv1D weight.

    Counted from the layer shapes (in_features * out_features), not from weight.numel(), so that the count
    is the logical one when the stored weight is not: sharded by FSDP (a local shard or an empty flat view),
    packed by a quantiser (4-bit layers subclass Linear), or on the meta device.

    model.modules() yields each module once, so a module called twice in one forward pass (weight sharing
    across layers, as in ALBERT) is undercounted; a tied lm_head is a separate Linear from the embedding
    it shares a weight with, and counts once, here, as a matrix product. Embedding lookups (token and
    position embeddings) are indexing, not products, and are not counted. Neither are biases or norms:
    they are O(width) per token, negligible next to the O(width^2) products.
    """
    import torch

    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += int(module.in_features) * int(module.out_features)
        elif _is_conv1d(module):
            # Conv1D(nf, nx) stores weight (nx, nf); fall back to the weight shape for older versions
            # without the nx attribute.
            nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
            if nx is None or nf is None:
                nx, nf = module.weight.shape
            total += int(nx) * int(nf)
    return total


def _first(config: Any, *names: str) -> Any:
    """The first of the given config attributes that is set (not missing and not None)."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def attention_dims(config: Any) -> tuple[int, int]:
    """(attention layers, attention width) from a transformers config.

    Layers: encoder-decoder configs count both stacks (T5: num_layers + num_decoder_layers; BART, Whisper,
    Marian, Pegasus: encoder_layers + decoder_layers). They are checked first because their attribute_map
    makes num_hidden_layers an alias of the encoder count alone. A decoder layer's cross-attention over the
    source sequence is not counted separately: the estimate charges every layer one T x T attention.

    Width: the model width (n_embd / hidden_size / d_model), except where the config states a head size
    (head_dim, or T5's d_kv) together with a head count; then heads * head_size, which is the H * Q of
    PaLM's formula and differs from the model width in models such as Gemma, Qwen3 or t5-11b.
    Multimodal configs that keep the language model under text_config are read from there.
    """
    layers = _layers(config)
    width = _width(config)
    if (layers is None or width is None) and hasattr(config, "get_text_config"):
        text = config.get_text_config()
        if text is not None and text is not config:
            layers = layers if layers is not None else _layers(text)
            width = width if width is not None else _width(text)
    if layers is None or width is None:
        raise ValueError(f"cannot read attention layers and width from {type(config).__name__}")
    return int(layers), int(width)


def _layers(config: Any) -> int | None:
    if getattr(config, "is_encoder_decoder", False):
        encoder = _first(config, "encoder_layers", "num_layers")
        decoder = _first(config, "decoder_layers", "num_decoder_layers")
        if encoder is not None and decoder is not None:
            return int(encoder) + int(decoder)
        if encoder is not None:  # T5 with num_decoder_layers unset means a decoder as deep as the encoder
            return 2 * int(encoder)
    return _first(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _width(config: Any) -> int | None:
    heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    head_size = _first(config, "head_dim", "d_kv")
    if isinstance(heads, int) and isinstance(head_size, int):
        return heads * head_size
    return _first(config, "hidden_size", "n_embd", "d_model", "dim")


def flops_per_token_from(n_matmul: int, layers: int, width: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 * N (forward + backward of the weight products) + 12 * L * W * T
    (QK^T and AV: 2 products x 2 FLOPs per multiply-add x 3 for forward + backward, over T positions)."""
    return 6.0 * n_matmul + 12.0 * layers * width * seq_len


def _config_of(model: Any) -> Any:
    """The transformers config, looking through DDP (.module) and torch.compile (._orig_mod) wrappers."""
    seen = 0
    while model is not None and seen < 8:
        config = getattr(model, "config", None)
        if config is not None:
            return config
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        seen += 1
    raise ValueError("model has no transformers config")


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token of `model` at sequence length `seq_len`.

    This walks every module; a training loop should call it once (or call matmul_parameters once and
    flops_per_token_from per step) rather than on each step.
    """
    layers, width = attention_dims(_config_of(model))
    return flops_per_token_from(matmul_parameters(model), layers, width, seq_len)


# --------------------------------------------------------------------------------------------------------
# Peak throughput
# --------------------------------------------------------------------------------------------------------

# Dense (no 2:4 sparsity) FLOP/s per GPU from NVIDIA's datasheets and architecture whitepapers. The
# datasheets quote the tensor-core figures with sparsity, twice the dense rate; these are halved. "fp32"
# is the non-tensor-core FP32 rate, what a float32 matmul gets when TF32 is off. fp16 figures are those
# with FP32 accumulation, which is what PyTorch's fp16 matmuls use. Devices whose figures could not be
# confirmed (A10G, L40, H800, A800, GH200, laptop and "D" variants) are deliberately absent: no MFU is
# better than a wrong one.
_H100_SXM = {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}
_H100_PCIE = {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}
# The H100 NVL and H200 NVL datasheets (per GPU, 350-600 W): 1,671 TFLOPS BF16/FP16 and 835 TF32 with
# sparsity, FP32 60.
_NVL = {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12}
_A100 = {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}  # SXM and PCIe alike
_L4 = {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}
_L40S = {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12}
# GeForce Ada runs FP16/BF16 with FP32 accumulation at half the FP16-accumulate rate (330.3).
_RTX_4090 = {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}
_A10 = {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}

# (pattern, label, peaks), tried in order on the upper-cased name torch.cuda.get_device_name() reports.
# Variants come before the generic entry of their family ("NVIDIA H100 PCIe" must not be read as SXM), and
# \b keeps A10 from matching A100 / A10G and L4 from matching L40S.
PEAK_TABLE: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"\bH100\b.*\bPCIE\b", "H100 PCIe", _H100_PCIE),
    (r"\bH100\b.*\bNVL\b", "H100 NVL", _NVL),
    (r"\bH100\b", "H100 SXM", _H100_SXM),  # "NVIDIA H100 80GB HBM3"
    (r"\bH200\b.*\bNVL\b", "H200 NVL", _NVL),
    (r"\bH200\b", "H200", _H100_SXM),  # same compute as H100 SXM, more and faster memory
    (r"\bA100\b", "A100", _A100),
    (r"\bA10\b", "A10", _A10),
    (r"\bL40S\b", "L40S", _L40S),
    (r"\bL4\b", "L4", _L4),
    (r"\bRTX 4090$", "RTX 4090", _RTX_4090),  # anchored: the 4090 D and laptop 4090 are slower chips
)


def device_label(device_name: str) -> str | None:
    """The table entry a device name resolves to ("H100 PCIe", "A100", ...), or None if it is unknown."""
    name = " ".join(device_name.upper().split())
    for pattern, label, _ in PEAK_TABLE:
        if re.search(pattern, name):
            return label
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of one GPU named `device_name` for matmuls in `precision` (bf16/fp16/tf32/fp32).

    None for devices not in the table.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    name = " ".join(device_name.upper().split())
    for pattern, _, peaks in PEAK_TABLE:
        if re.search(pattern, name):
            return peaks[precision]
    return None


def _fp32_matmuls_use_tf32() -> bool:
    """Whether float32 CUDA matmuls run on TF32 tensor cores under the current torch settings."""
    import torch

    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 has a per-backend fp32_precision ("ieee", "tf32", or "none" = inherit the global
    # torch.backends.fp32_precision). Read it first: once it has been set, reading the legacy allow_tf32
    # or get_float32_matmul_precision() raises because the two APIs were mixed.
    new = getattr(matmul, "fp32_precision", None)
    if isinstance(new, str):
        if new == "none":
            new = getattr(torch.backends, "fp32_precision", "none")
        if new in ("tf32", "ieee", "none"):
            return new == "tf32"
    # Older torch: allow_tf32, which set_float32_matmul_precision("high"/"medium") also turns on.
    try:
        if matmul.allow_tf32:
            return True
    except RuntimeError:
        pass
    try:
        return torch.get_float32_matmul_precision() in ("high", "medium")
    except RuntimeError:
        return False


def matmul_precision(mixed_precision: str, dtype: Any = None) -> str:
    """The precision whose peak applies, from Accelerate's mixed_precision ("bf16", "fp16" or "no").

    Under "bf16"/"fp16" autocast runs the matmuls in that type. Under "no" the matmuls run in the weights'
    dtype: pass `dtype` (the model's parameter dtype) when the model itself is loaded in bfloat16/float16;
    for float32 (the default) it is "tf32" when torch lets float32 matmuls use TF32 and "fp32" otherwise.
    """
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    if mixed_precision != "no":
        raise ValueError(f"no peak for mixed_precision={mixed_precision!r} (expected 'bf16', 'fp16' or 'no')")
    if dtype is not None:
        import torch

        if dtype == torch.bfloat16:
            return "bf16"
        if dtype == torch.float16:
            return "fp16"
    return "tf32" if _fp32_matmuls_use_tf32() else "fp32"


def device_peak(mixed_precision: str, dtype: Any = None) -> tuple[float, str, str] | None:
    """(peak FLOP/s, precision, device name) of the current CUDA device, or None.

    None on CPU (no MFU there), for GPUs not in the table, and for mixed_precision values with no listed
    peak (Accelerate's "fp8"), so a caller can simply skip MFU when it gets None.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        precision = matmul_precision(mixed_precision, dtype)
    except ValueError:
        return None
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    peak = peak_flops(name, precision)
    if peak is None:
        return None
    return peak, precision, name


def mfu(flops: float, seconds: float, peak: float, world: int) -> float:
    """Model FLOPs utilisation: FLOPs done in `seconds` over what `world` GPUs of `peak` FLOP/s could do.

    `flops` is the total over all processes (e.g. flops_per_token x global tokens in the interval).
    """
    if seconds <= 0 or peak <= 0 or world <= 0:
        raise ValueError(f"seconds, peak and world must be positive (got {seconds}, {peak}, {world})")
    return flops / (seconds * peak * world)
