"""`llmctl compress` round trips on the tiny presets: the int8 folder loads through llmctl's loaders, runs, and the
report holds size, speed and the task metric before and after. Also home of `tiny_run`, the trained tiny runs
that test_serve.py shares (each is trained once per test session)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli

# A few optimizer steps: the tests check the round trip and the report, not how well the model learned.
STEPS = {"summarization": 6, "translation": 6, "classification": 6, "qa": 4, "multiple_choice": 2}


def tiny_run(tmp_path_factory, task: str, *extra: str) -> Path:
    """A finished tiny run of `task` ("pretrain" or a fine-tuning task), trained once per session."""
    root = tmp_path_factory.getbasetemp() / "deploy-runs" / task
    if (root / "results.json").exists():
        return root
    if task == "pretrain":
        cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(root), "--set", "train.max_steps=10",
            "--set", "train.eval_every=100", *extra, check=True)
    else:
        cli("finetune", f"recipes/tiny/{task}.toml", "-o", str(root), "--set", f"train.max_steps={STEPS[task]}",
            "--set", "train.eval_every=100", "--set", "train.checkpoint_every=100", *extra, check=True)
    return root


def report_of(folder: Path) -> dict:
    return json.loads((folder / "compress-report.json").read_text(encoding="utf-8"))


def check_report(report: dict, metric_prefix: str) -> None:
    assert report["measured"] is True
    size = report["size_bytes"]
    assert size["after"] < size["before"] and size["ratio"] > 2.0
    speed = report["examples_per_sec"]
    assert speed["before"] > 0 and speed["after"] > 0
    m = report["metric"]
    assert m["name"].startswith(metric_prefix)
    assert isinstance(m["before"], float) and isinstance(m["after"], float)
    assert m["delta"] == pytest.approx(m["after"] - m["before"], abs=1e-4)
    # Every missed target is said, and only those.
    assert bool([x for x in report["missed_targets"] if x.startswith("size")]) == (size["ratio"] < 2.0)
    assert bool([x for x in report["missed_targets"] if x.startswith("speed")]) == (speed["speedup"] <= 1.0)


@pytest.fixture(scope="module")
def summ(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "summarization")


def test_cli_round_trip_summarization(summ, tmp_path):
    """The command: report on stdout and in DIR; DIR holds no fp32 weights and no pickle; summarize, eval and
    generate load it."""
    out = tmp_path / "int8"
    proc = cli("compress", str(summ), "--to", str(out), "--min-features", "1", check=True)
    assert "weights on disk" in proc.stdout and "rouge.rougeL" in proc.stdout
    report = report_of(out)
    check_report(report, "rouge")
    assert report["int8_compute_layers"] == report["linear_layers"] > 0  # --min-features 1: all in int8
    names = sorted(p.name for p in out.iterdir())
    assert "model.int8.safetensors" in names and "llmctl-int8.json" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) or n == "model.safetensors" for n in names)
    assert "Compressed (int8)" in (out / "README.md").read_text(encoding="utf-8")

    doc = tmp_path / "doc.txt"
    doc.write_text("Jeaen Traglison won the annual boat race on the river Theaa near Styfield.", encoding="utf-8")
    got = cli("summarize", "--model", str(out), str(doc), check=True)
    assert json.loads(got.stdout.splitlines()[0])["id"] == str(doc)
    # The loaders of eval and generate (in this process: a CLI start costs seconds).
    from llmctl import evaluation, generate_cli

    loaded = evaluation.load_model_dir(str(out))
    assert loaded.task.name == "summarization"
    assert any(type(m).__name__ == "Int8Linear" for m in loaded.model.modules())
    gen = generate_cli.load_generator(str(out), device="cpu")
    settings = generate_cli.settings_for(gen, max_new_tokens=4, sampling={"do_sample": False})
    assert len(generate_cli.generate_texts(gen, ["Jeaen won the race."], settings)) == 1

    # A second compress into the same folder is refused; a missing run is one line with exit 1.
    again = cli("compress", str(summ), "--to", str(out))
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
    missing = cli("compress", str(tmp_path / "nope"), "--to", str(tmp_path / "x"))
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0 and "no such run" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task,prefix", [("classification", "accuracy"), ("qa", "squad"),
                                         ("translation", "sacrebleu")])
def test_round_trip_per_task(task, prefix, tmp_path_factory, tmp_path):
    from llmctl import compress

    run = tiny_run(tmp_path_factory, task)
    report = compress.compress_run(run, tmp_path / "int8", max_examples=24)
    check_report(report, prefix)
    assert report_of(tmp_path / "int8") == {**report, "dir_bytes": report_of(tmp_path / "int8")["dir_bytes"]}


@pytest.mark.slow
def test_round_trip_pretrain_with_pruning(tmp_path_factory, tmp_path):
    """A pretraining run: scored by perplexity; --sparsity zeroes that share of the linear weights."""
    from llmctl import compress, modeling

    run = tiny_run(tmp_path_factory, "pretrain")
    report = compress.compress_run(run, tmp_path / "int8", sparsity=0.5, min_features=1, max_examples=8)
    assert report["metric"]["name"] == "perplexity" and report["metric"]["after"] > 1.0
    assert report["achieved_sparsity"] >= 0.5
    model = modeling.load_causal_lm(str(tmp_path / "int8"))
    assert any(type(m).__name__ == "Int8Linear" for m in model.modules())


@pytest.mark.slow
def test_round_trip_multiple_choice(tmp_path_factory, tmp_path):
    from llmctl import compress

    run = tiny_run(tmp_path_factory, "multiple_choice")
    check_report(compress.compress_run(run, tmp_path / "int8", max_examples=24), "accuracy")


def test_int8_layer_is_batch_invariant_and_close():
    """Per-row activation scales: a row's output does not depend on the other rows of its batch."""
    import torch

    from llmctl.int8 import _int8_linear_class, quantize_rows

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q, scale = quantize_rows(lin.weight)
    layer = _int8_linear_class()(64, 48, q, scale, lin.bias.detach())
    x = torch.randn(5, 64)
    alone = layer(x[:2])
    batched = layer(torch.cat([x[:2], 100 * x[2:]]))
    assert torch.equal(alone, batched[:2])
    ref = lin(x).detach()
    assert ((layer(x) - ref).norm() / ref.norm()) < 0.02


def test_broken_folder_is_one_line(summ, tmp_path):
    from llmctl import compress, modeling

    out = tmp_path / "int8"
    compress.compress_run(summ, out, measure=False)
    manifest = json.loads((out / "llmctl-int8.json").read_text())
    manifest["format"] = "something-else"
    (out / "llmctl-int8.json").write_text(json.dumps(manifest))
    doc = tmp_path / "doc.txt"
    doc.write_text("Jeaen won the boat race.", encoding="utf-8")
    proc = cli("summarize", "--model", str(out), str(doc), check=False)
    assert proc.returncode == 1 and "llmctl-int8.json: not an llmctl int8 manifest" in proc.stderr
    manifest["format"] = "llmctl-int8"
    (out / "llmctl-int8.json").write_text(json.dumps(manifest))
    (out / "model.int8.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(modeling.ModelError, match="model.int8.safetensors: cannot read"):
        modeling.load_pretrained(str(out), __import__("transformers").AutoModelForSeq2SeqLM)
