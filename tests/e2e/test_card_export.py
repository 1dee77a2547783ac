"""Model cards, the environment record and `llmctl export`, on tiny runs through the real CLI.

Every finished run's final/ holds a README.md in the Hugging Face model-card format whose front matter carries
results.json's metric values; results.json records the versions, device and data hashes; `export` copies a run
into a clean directory that transformers loads alone, never overwriting anything.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, cli

CLS = "recipes/tiny/classification.toml"
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "tokenizers")


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


def front_matter(card: Path) -> tuple[dict, str]:
    """(the YAML metadata, the Markdown after it) of a model card."""
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:80]
    head, sep, body = text[4:].partition("\n---\n")
    assert sep, "the front matter is not closed"
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_metrics(meta: dict) -> dict:
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    return {m["name"]: m for m in result["metrics"]}


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("card") / "cls"
    cli("finetune", CLS, "-o", str(run), "--set", "train.max_steps=10", check=True)
    return run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("card") / "lora"
    cli("finetune", CLS, "-o", str(run), "--set", "train.max_steps=10", "--set", "lora.enabled=true", check=True)
    return run


@pytest.fixture(scope="module")
def pre_run(small_corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("card") / "pre"
    cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(run), "--data", str(small_corpus),
        "--set", "train.max_steps=10", check=True)
    return run


# --------------------------------------------------------------------------------------------------- the card


def test_finetune_card_matches_results(cls_run):
    res = results(cls_run)
    meta, body = front_matter(cls_run / "final" / "README.md")
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["llmctl", "classification"]
    assert "base_model" not in meta  # trained from scratch: no hub model to name
    assert meta["datasets"] == ["train.jsonl"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert entry["name"] == res["recipe"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["name"] == "train.jsonl" and result["dataset"]["split"] == "validation"
    metrics = card_metrics(meta)
    numeric = {k: v for k, v in res["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert set(metrics) == set(numeric) and numeric
    for name, value in numeric.items():
        assert metrics[name]["value"] == value, name  # exactly: the card is written from results.json
        assert metrics[name]["type"] == name.split(".")[0]
    # The Markdown: the recipe as the run wrote it, and how to load the model.
    assert (cls_run / "recipe.toml").read_text(encoding="utf-8").strip() in body
    assert "AutoModelForSequenceClassification.from_pretrained" in body
    assert "llmctl eval --model" in body
    assert res["environment"]["data"][next(iter(res["environment"]["data"]))] in body  # the data hash


def test_pretrain_card_matches_results(pre_run):
    res = results(pre_run)
    meta, body = front_matter(pre_run / "final" / "README.md")
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["llmctl", "causal_lm"]
    metrics = card_metrics(meta)
    assert metrics["val_perplexity"]["value"] == res["val_perplexity"]
    assert metrics["val_loss"]["value"] == res["val_loss"]
    assert metrics["val_perplexity"]["type"] == "perplexity"
    assert (pre_run / "recipe.toml").read_text(encoding="utf-8").strip() in body
    assert "AutoModelForCausalLM.from_pretrained" in body


def test_results_record_the_environment(cls_run, pre_run, small_corpus):
    for run, files in ((cls_run, [str(ROOT / "data" / "classification" / "train.jsonl")]),
                       (pre_run, [str(small_corpus)])):
        res = results(run)
        env = res["environment"]
        assert res["precision"] in ("fp32", "bf16", "fp16")
        assert env["llmctl"]["version"] == version("llmctl")
        assert env["packages"] == {name: version(name) for name in PACKAGES}
        assert set(env["data"]) == set(files)
        for path in files:
            assert env["data"][path] == sha256(path)
        dev = env["device"]
        assert dev["cpu_count"] >= 1 and isinstance(dev["native_bf16"], bool)
        assert dev["gpu_count"] == len(dev["gpus"])
        if (ROOT / ".git").exists():  # run from this checkout: the commit is recorded
            commit = env["llmctl"]["git_commit"]
            assert len(commit) == 40 and isinstance(env["llmctl"]["git_dirty"], bool)
            # HEAD itself, or an ancestor of it should a commit land while the tests run.
            known = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=ROOT,
                                   capture_output=True, text=True)
            assert known.returncode == 0, (commit, known.stderr)


def test_yaml_strings_survive_any_text():
    from llmctl.card import yaml_number, yaml_str

    for text in ['a: b', '"quoted" \\ back', "line\nbreak\ttab", "- dash", "#hash", "yes", "null", "1.5",
                 "中文 ünï", "\x85\x7f\x01 odd", "ls\u2028ps\u2029", "{[flow]}", "'single'", "@at `tick`"]:
        assert yaml.safe_load(f"key: {yaml_str(text)}") == {"key": text}, text
    for value in (0.1 + 0.2, 1e-12, 3, -2.5, 123456789.125):
        assert yaml.safe_load(f"v: {yaml_number(value)}")["v"] == value


# ------------------------------------------------------------------------------------------------------ export


def _logits(model_dir: Path, text: str = "a quiet and pleasant film"):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


def test_export_loads_with_transformers_alone(cls_run, tmp_path):
    import torch

    out = tmp_path / "exported" / "cls"
    proc = cli("export", str(cls_run), "--to", str(out), check=True)
    assert str(out) in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert (out / "README.md").read_bytes() == (cls_run / "final" / "README.md").read_bytes()
    assert torch.equal(_logits(out), _logits(cls_run / "final"))
    assert [p.name for p in out.parent.iterdir()] == ["cls"]  # no temporary directory left behind


def test_export_never_overwrites(cls_run, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    proc = cli("export", str(cls_run), "--to", str(target))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "not empty" in proc.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]

    file_target = tmp_path / "a-file"
    file_target.write_text("x")
    assert cli("export", str(cls_run), "--to", str(file_target)).returncode == 1
    assert file_target.read_text() == "x"


def test_export_refuses_an_unfinished_run(tmp_path):
    unfinished = tmp_path / "run"
    (unfinished / "final").mkdir(parents=True)
    proc = cli("export", str(unfinished), "--to", str(tmp_path / "out"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "results.json" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_export_lora_adapter_or_merged_model(lora_run, tmp_path):
    import torch

    adapter = tmp_path / "adapter"
    cli("export", str(lora_run), "--to", str(adapter), check=True)
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= names
    assert "model.safetensors" not in names
    meta, body = front_matter(adapter / "README.md")
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
    assert card_metrics(meta)["accuracy.accuracy"]["value"] == results(lora_run)["metrics"]["accuracy.accuracy"]
    assert "PeftModel.from_pretrained" in body
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(adapter)).peft_type == "LORA"

    merged = tmp_path / "merged"
    cli("export", str(lora_run), "--to", str(merged), "--merge-lora", check=True)
    names = {p.name for p in merged.iterdir()}
    assert "adapter_config.json" not in names and {"config.json", "model.safetensors", "README.md"} <= names
    assert front_matter(merged / "README.md")[0]["library_name"] == "transformers"
    assert torch.equal(_logits(merged), _logits(lora_run / "final"))
