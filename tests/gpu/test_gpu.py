"""Checks that need CUDA; each skips without it. Run them on a GPU machine with `pytest -m gpu tests/gpu`."""

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import cli  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def summarizer(tmp_path_factory):
    run = tmp_path_factory.mktemp("gpu") / "sum"
    cli("finetune", "recipes/tiny/summarization.toml", "-o", str(run), check=True)
    return run


def test_training_uses_bf16_where_supported(summarizer):
    res = json.loads((summarizer / "results.json").read_text())
    assert res["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    log = [json.loads(line) for line in (summarizer / "log.jsonl").read_text().splitlines()]
    name = torch.cuda.get_device_name()
    from llmctl import flops

    if flops.device_label(name) is not None:  # a GPU whose peak is known reports MFU
        assert any("mfu" in r for r in log) and 0 < res.get("mfu", 0) < 1


def test_eval_and_summarize_run_on_the_gpu(summarizer, monkeypatch, tmp_path):
    from accelerate import Accelerator

    from llmctl import evaluation, generation
    from llmctl.summarize import run_summarize

    loaded = evaluation.load_model_dir(str(summarizer / "final"), device=Accelerator().device)
    assert loaded.model.device.type == "cuda"
    seen = []
    real = generation.generate

    def spy(model, *args, **kwargs):
        seen.append(model.device.type)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    doc = tmp_path / "d.txt"
    doc.write_text("Ulla Brenk opened a bakery in Varnhold on 3 May.\n", encoding="utf-8")
    run_summarize(str(summarizer / "final"), [str(doc)], output=tmp_path / "s.jsonl", settings=None)
    assert seen and set(seen) == {"cuda"}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_export_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "ddp"
    cli("finetune", "recipes/tiny/classification.toml", "-o", str(run), "--num-processes", "2", check=True)
    model = AutoModelForSequenceClassification.from_pretrained(run / "final")
    assert model.config.llmctl["task"] == "classification"
