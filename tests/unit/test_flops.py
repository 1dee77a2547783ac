"""FLOPs per token and peak-throughput lookup for MFU. Models are built on the meta device: shapes only."""

import pytest
import torch

from llmctl import flops as F


def meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# ---------------------------------------------------------------- FLOPs per token

def test_gpt2_matmul_parameters_and_flops_match_hand_count():
    from transformers import GPT2Config

    L, d, V, T = 4, 64, 1000, 128
    model = meta_model(GPT2Config(n_layer=L, n_embd=d, n_head=4, vocab_size=V, n_positions=T))
    # Per layer: c_attn 3d^2 + attn c_proj d^2 + mlp c_fc 4d*d + mlp c_proj d*4d = 12 d^2 (all Conv1D);
    # plus the lm_head Linear tied to wte. wte/wpe lookups, biases and LayerNorms are not counted.
    n = L * 12 * d * d + V * d
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: must still count once, as lm_head
    assert F.matmul_parameters(model) == n
    assert F.attention_dims(model.config) == (L, d)
    assert F.flops_per_token(model, T) == 6 * n + 12 * L * d * T
    assert F.flops_per_token(model, 2 * T) - F.flops_per_token(model, T) == 12 * L * d * T


def test_llama_gqa_matmul_parameters_match_hand_count():
    from transformers import LlamaConfig

    d, heads, kv, ffn, L, V, T = 64, 4, 2, 172, 3, 1000, 32
    model = meta_model(LlamaConfig(hidden_size=d, num_attention_heads=heads, num_key_value_heads=kv,
                                   intermediate_size=ffn, num_hidden_layers=L, vocab_size=V,
                                   tie_word_embeddings=False))
    hd = d // heads
    per_layer = d * d + 2 * d * (kv * hd) + d * d + 3 * d * ffn  # q, k+v (grouped), o, gate/up/down
    n = L * per_layer + V * d  # lm_head; embed_tokens is a lookup
    assert F.matmul_parameters(model) == n
    assert n < sum(p.numel() for p in model.parameters())  # the untied input embedding is left out
    assert F.flops_per_token(model, T) == 6 * n + 12 * L * d * T


def test_width_is_heads_times_head_dim_when_the_config_sets_it():
    from transformers import LlamaConfig

    # Qwen3/Gemma-style: 4 heads of 32 on a 64-wide model; QK^T and AV run over 4 * 32 = 128 dims.
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=32, num_hidden_layers=2)
    assert F.attention_dims(config) == (2, 128)


def test_encoder_decoder_counts_both_stacks():
    from transformers import BartConfig, T5Config

    t5 = T5Config(num_layers=2, num_decoder_layers=3, d_model=32, num_heads=4, d_kv=8, d_ff=64)
    assert F.attention_dims(t5) == (5, 32)
    assert F.attention_dims(T5Config(num_layers=2, d_model=32, num_heads=4, d_kv=8)) == (4, 32)
    bart = BartConfig(encoder_layers=2, decoder_layers=3, d_model=32, encoder_attention_heads=4,
                      decoder_attention_heads=4)
    assert F.attention_dims(bart) == (5, 32)


def test_flops_formula_and_wrapped_model():
    assert F.flops_per_token_from(1000, 2, 8, 16) == 6 * 1000 + 12 * 2 * 8 * 16

    from transformers import GPT2Config

    model = meta_model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=8))

    class Wrapper(torch.nn.Module):  # like DistributedDataParallel: the config is on .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert F.flops_per_token(Wrapper(model), 8) == F.flops_per_token(model, 8)


# ---------------------------------------------------------------- peak throughput

@pytest.mark.parametrize("name, label, bf16", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5e12),
    ("NVIDIA H200", "H200", 989e12),
    ("NVIDIA H200 NVL", "H200 NVL", 835.5e12),
    ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
    ("NVIDIA A100-SXM4-40GB", "A100", 312e12),
    ("NVIDIA A100 80GB PCIe", "A100", 312e12),
    ("NVIDIA A100-PCIE-40GB", "A100", 312e12),
    ("NVIDIA L4", "L4", 121e12),
    ("NVIDIA L40S", "L40S", 362.05e12),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2e12),
    ("NVIDIA A10", "A10", 125e12),
])
def test_peak_by_device_name(name, label, bf16):
    assert F.device_label(name) == label
    assert F.peak_flops(name, "bf16") == bf16
    assert F.peak_flops(name, "fp16") == bf16
    # TF32 is half the 16-bit tensor rate (within datasheet rounding: L40S lists 183 vs 362.05), plain
    # FP32 no faster than TF32.
    assert F.peak_flops(name, "fp32") <= F.peak_flops(name, "tf32") <= bf16 / 2 * 1.02
    assert F.peak_flops(name, "fp32") < bf16


def test_peak_values_for_sxm_pcie_and_precisions():
    assert F.peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.7e12
    assert F.peak_flops("NVIDIA H100 80GB HBM3", "fp32") == 66.9e12
    assert F.peak_flops("NVIDIA H100 PCIe", "tf32") == 378e12
    assert F.peak_flops("NVIDIA H100 PCIe", "fp32") == 51.2e12
    assert F.peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert F.peak_flops("NVIDIA A100 80GB PCIe", "fp32") == 19.5e12
    assert F.peak_flops("NVIDIA H200", "bf16") == F.peak_flops("NVIDIA H100 80GB HBM3", "bf16")


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA GeForce RTX 4090 D", "NVIDIA L40", "Tesla T4",
                                  "NVIDIA H20", "NVIDIA GH200 480GB", "cpu", ""])
def test_unknown_devices_have_no_peak(name):
    assert F.peak_flops(name, "bf16") is None
    assert F.device_label(name) is None


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError):
        F.peak_flops("NVIDIA H100 PCIe", "fp8")


# ---------------------------------------------------------------- matmul precision

@pytest.fixture
def restore_tf32():
    matmul = torch.backends.cuda.matmul
    new_api = getattr(matmul, "fp32_precision", None)
    old_api = None if new_api is not None else matmul.allow_tf32
    yield matmul
    if new_api is not None:  # restore through the API the setting was read with, "none" included
        matmul.fp32_precision = new_api
    else:
        matmul.allow_tf32 = old_api


def test_matmul_precision_follows_allow_tf32(restore_tf32):
    assert F.matmul_precision("bf16") == "bf16"
    assert F.matmul_precision("fp16") == "fp16"
    restore_tf32.allow_tf32 = True
    assert F.matmul_precision("no") == "tf32"
    restore_tf32.allow_tf32 = False
    assert F.matmul_precision("no") == "fp32"


def test_matmul_precision_follows_float32_matmul_precision(restore_tf32):
    torch.set_float32_matmul_precision("high")
    assert F.matmul_precision("no") == "tf32"
    torch.set_float32_matmul_precision("highest")
    assert F.matmul_precision("no") == "fp32"


def test_matmul_precision_follows_new_fp32_precision_api(restore_tf32):
    if not hasattr(restore_tf32, "fp32_precision"):
        pytest.skip("torch without the fp32_precision API")
    # After the new API is used, reading allow_tf32 raises in torch 2.9+; this must still answer.
    restore_tf32.fp32_precision = "tf32"
    assert F.matmul_precision("no") == "tf32"
    restore_tf32.fp32_precision = "ieee"
    assert F.matmul_precision("no") == "fp32"


def test_matmul_precision_uses_weight_dtype_without_autocast(restore_tf32):
    restore_tf32.allow_tf32 = False
    assert F.matmul_precision("no", torch.bfloat16) == "bf16"
    assert F.matmul_precision("no", torch.float16) == "fp16"
    assert F.matmul_precision("no", torch.float32) == "fp32"
    with pytest.raises(ValueError):
        F.matmul_precision("fp8")


def test_device_peak_on_cpu_and_on_a_faked_gpu(monkeypatch, restore_tf32):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert F.device_peak("bf16") is None

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert F.device_peak("bf16") == (756e12, "bf16", "NVIDIA H100 PCIe")
    restore_tf32.allow_tf32 = False
    assert F.device_peak("no") == (51.2e12, "fp32", "NVIDIA H100 PCIe")
    assert F.device_peak("fp8") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10G")
    assert F.device_peak("bf16") is None


# ---------------------------------------------------------------- MFU

def test_mfu_hand_example():
    # 1e15 FLOPs in 2 s on 4 GPUs of 312 TFLOP/s: 1e15 / (2 * 4 * 312e12) = 0.4006...
    assert F.mfu(1e15, 2.0, 312e12, 4) == pytest.approx(1e15 / 2.496e15)
    # 8 GPUs doing 8x the work in the same time: same utilisation.
    assert F.mfu(8e15, 2.0, 312e12, 8) == pytest.approx(F.mfu(1e15, 2.0, 312e12, 1))
    with pytest.raises(ValueError):
        F.mfu(1e15, 0.0, 312e12, 1)
