"""train.precision resolved against the hardware (llmctl/precision.py), the probe's cache, train.compile's rule
(llmctl/compile.py) and the optimizer's fused kernel. The GEMM probe is mocked: no test here measures time."""

import json
from types import SimpleNamespace

import pytest
import torch

from llmctl import compile as compiling
from llmctl import precision as P
from llmctl.recipe import RecipeError, load

AMX_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AVX2_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse avx2 fma
"""


def probe(speedup: float, cached: bool = False):
    return lambda: P.Probe(fp32_gflops=100.0, bf16_gflops=100.0 * speedup, cached=cached)


def never():
    raise AssertionError("the GEMM probe must not run here")


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16", "avx512_bf16"])


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda cpuinfo=None: [])


# ------------------------------------------------------------------------------------------- cpuinfo


def test_cpuinfo_flags_and_model():
    assert P.cpu_bf16_flags(AMX_CPUINFO) == ["amx_bf16", "avx512_bf16"]
    assert P.cpu_bf16_flags(AVX2_CPUINFO) == []
    assert P.cpu_bf16_flags("") == []
    assert P.cpu_model(AMX_CPUINFO) == "Intel(R) Xeon(R) Platinum 8480+"
    assert P.cpu_model(AVX2_CPUINFO) == "AMD EPYC 7B13 64-Core Processor"


# ------------------------------------------------------------------------------------------- CPU choices


def test_auto_on_cpu_with_native_bf16_and_a_fast_probe_is_bf16(amx):
    got = P.resolve("auto", cuda=False, cpu_speedup=probe(6.4))
    assert (got.mixed_precision, got.label) == ("bf16", "bf16")
    assert got.reason == ("auto: the CPU has native bf16 (amx_bf16, avx512_bf16); bf16 GEMM 6.4x fp32 "
                          "(640 vs 100 GFLOP/s)")
    assert str(got).startswith("bf16 (auto: ")


def test_auto_says_when_the_probe_came_from_the_cache(amx):
    assert P.resolve("auto", cuda=False, cpu_speedup=probe(6.4, cached=True)).reason.endswith("GFLOP/s, cached)")


def test_auto_with_flags_but_a_slow_probe_is_fp32(amx):
    got = P.resolve("auto", cuda=False, cpu_speedup=probe(1.2))
    assert (got.mixed_precision, got.label) == ("no", "fp32")
    assert "below the 1.5x that pays for autocast" in got.reason


def test_auto_without_native_bf16_is_fp32_and_never_probes(no_bf16):
    got = P.resolve("auto", cuda=False, cpu_speedup=never)
    assert (got.mixed_precision, got.label) == ("no", "fp32")
    assert got.reason == "auto: the CPU has no native bf16 (amx_bf16 or avx512_bf16)"


def test_explicit_choices_on_cpu_never_probe(no_bf16):
    assert P.resolve("fp32", cuda=False, cpu_speedup=never).mixed_precision == "no"
    bf16 = P.resolve("bf16", cuda=False, cpu_speedup=never)
    assert (bf16.mixed_precision, bf16.label) == ("bf16", "bf16")  # allowed on any CPU, with a warning
    assert "no native bf16" in bf16.reason and "much slower than fp32" in bf16.reason


def test_explicit_bf16_on_a_bf16_cpu(amx):
    got = P.resolve("bf16", cuda=False, cpu_speedup=never)
    assert got.reason == 'train.precision = "bf16"; the CPU has native bf16 (amx_bf16, avx512_bf16)'


def test_fp16_on_cpu_is_refused_as_a_train_error(monkeypatch):
    with pytest.raises(P.PrecisionError, match='"fp16" needs a GPU'):
        P.resolve("fp16", cuda=False)
    from llmctl.train import TrainError, precision_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match='train.precision = "fp16" needs a GPU'):
        precision_for("fp16")


def test_unknown_choice():
    with pytest.raises(P.PrecisionError, match="one of auto, fp32, bf16, fp16"):
        P.resolve("int8", cuda=False)


# ------------------------------------------------------------------------------------------- GPU choices


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_gpu(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Tesla T4" if not bf16 else "NVIDIA A100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    got = P.resolve("auto", cuda=True, cpu_speedup=never)
    assert (got.mixed_precision, got.label) == (expected, expected)
    assert ("gradient scaler" in got.reason) == (expected == "fp16")


# ------------------------------------------------------------------------------------------- the cache


def test_probe_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "cache_key", lambda: "CPU X | torch 9")
    calls = []

    def measure():
        calls.append(1)
        return P.Probe(fp32_gflops=300.0, bf16_gflops=2000.0)

    path = tmp_path / "llmctl" / "precision.json"
    first = P.cpu_bf16_probe(measure_fn=measure, path=path)
    second = P.cpu_bf16_probe(measure_fn=measure, path=path)
    assert len(calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.speedup == pytest.approx(2000 / 300)
    entry = json.loads(path.read_text())["CPU X | torch 9"]
    assert (entry["fp32_gflops"], entry["bf16_gflops"]) == (300.0, 2000.0)


def test_cache_is_keyed_by_cpu_and_torch(tmp_path, monkeypatch):
    path = tmp_path / "precision.json"
    monkeypatch.setattr(P, "cache_key", lambda: "CPU X | torch 9")
    P.cpu_bf16_probe(measure_fn=lambda: P.Probe(100.0, 600.0), path=path)
    monkeypatch.setattr(P, "cache_key", lambda: "CPU X | torch 10")
    other = P.cpu_bf16_probe(measure_fn=lambda: P.Probe(100.0, 50.0), path=path)
    assert (other.cached, other.speedup) == (False, 0.5)
    assert sorted(json.loads(path.read_text())) == ["CPU X | torch 10", "CPU X | torch 9"]


def test_a_broken_cache_costs_a_probe_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "cache_key", lambda: "k")
    path = tmp_path / "precision.json"
    path.write_text("{not json")
    assert P.cpu_bf16_probe(measure_fn=lambda: P.Probe(100.0, 600.0), path=path).cached is False
    path.write_text(json.dumps({"k": {"fp32_gflops": "x"}}))
    assert P.cpu_bf16_probe(measure_fn=lambda: P.Probe(100.0, 600.0), path=path).cached is False
    assert P.cpu_bf16_probe(measure_fn=never, path=path).cached is True


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCTL_HOME", str(tmp_path / "home"))
    assert P.cache_file() == tmp_path / "home" / "cache" / "precision.json"
    monkeypatch.delenv("LLMCTL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert P.cache_file() == tmp_path / "xdg" / "llmctl" / "precision.json"


def test_cache_key_names_cpu_and_torch():
    assert P.cache_key() == f"{P.cpu_model()} | torch {torch.__version__}"


# ------------------------------------------------------------------------------------------- compile


@pytest.mark.parametrize("setting, steps, static, world, expected", [
    (False, 10_000, True, 1, False),
    (True, 5, False, 4, True),
    ("auto", compiling.AUTO_MIN_STEPS, True, 1, True),
    ("auto", compiling.AUTO_MIN_STEPS - 1, True, 1, False),
    ("auto", 10_000, False, 1, False),
    ("auto", 10_000, True, 2, False),
])
def test_compile_rule(setting, steps, static, world, expected):
    wanted, why = compiling.decide(setting, steps=steps, static_shapes=static, world=world)
    assert wanted is expected
    assert why.startswith("auto: " if setting == "auto" else "train.compile = ")


def test_warm_up_compiles_and_leaves_no_gradients_and_the_same_rng():
    from accelerate import Accelerator

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))

    class LM(torch.nn.Module):  # a model whose forward returns .loss, as transformers models do
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            return SimpleNamespace(loss=self.body(x).pow(2).mean())

    lm = LM().eval()
    compiled = compiling.compile_model(lm, static_shapes=True)
    batch, accelerator = {"x": torch.randn(4, 8)}, Accelerator(cpu=True)
    before = torch.random.get_rng_state()
    seconds = compiling.warm_up(compiled, batch, accelerator)
    assert seconds > 0
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(p.grad is None for p in lm.parameters())
    assert not lm.training  # the mode it had
    assert compiled._orig_mod is lm  # shares the parameters


def test_recipe_compile_key():
    base = {"name": "x", "data": {"train_files": ["a.txt"]}}
    assert load(None, [], base=base).train.compile == "auto"
    assert load(None, ["train.compile=true"], base=base).train.compile is True
    assert load(None, ["train.compile=false"], base=base).train.compile is False
    for bad in ("train.compile=1", "train.compile=yes"):
        with pytest.raises(RecipeError, match="train.compile"):
            load(None, [bad], base=base)


# ------------------------------------------------------------------------------------------- optimizer


def _cfg():
    return SimpleNamespace(lr=1e-3, min_lr=1e-4, beta1=0.9, beta2=0.95, weight_decay=0.1, warmup_steps=2,
                           max_steps=10)


def test_adamw_is_fused_on_cpu_and_steps():
    from llmctl.train import optimizer_and_schedule

    model = torch.nn.Linear(4, 3)
    optimizer, _ = optimizer_and_schedule(model, _cfg())
    assert all(g["fused"] is True for g in optimizer.param_groups)
    before = model.weight.detach().clone()
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)


def test_adamw_is_not_fused_where_the_device_has_no_kernel():
    from llmctl.train import optimizer_and_schedule

    optimizer, _ = optimizer_and_schedule(torch.nn.Linear(4, 3, device="meta"), _cfg())
    assert not any(g["fused"] for g in optimizer.param_groups)
