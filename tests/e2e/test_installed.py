"""llmctl installed from its wheel works from any directory: shipped recipes, the embedded data generated into
the user cache, runs under LLMCTL_HOME.

The wheel is built from a copy of the sources (so no build/ folder is left in the checkout), installed with
`pip install --target`, and put first on PYTHONPATH, so that it shadows the editable install of the checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Installed:
    def __init__(self, base: Path):
        self.base = base
        self.target = base / "site"
        self.home = base / "home"
        self.llmctl_home = base / "llmctl-home"
        self.cwd = base / "work"  # an empty working directory, far from the checkout

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "PYTHONHOME")}
        env.update(PYTHONPATH=str(self.target), HOME=str(self.home), LLMCTL_HOME=str(self.llmctl_home),
                   HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", COLUMNS="200")
        return env

    def run(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def check(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "llmctl", src / "llmctl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "wheel"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (base / "wheel").glob("llmctl-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(base / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    inst = Installed(base)
    for path in (inst.home, inst.llmctl_home, inst.cwd):
        path.mkdir()
    return inst


def test_the_wheel_copy_generates_the_embedded_data(installed):
    where = installed.check("-c", "import llmctl; print(llmctl.__file__)").stdout.strip()
    assert Path(where).is_relative_to(installed.target), where
    proc = installed.check("-c", "from llmctl import embedded; print(embedded.resolve('embedded:pretrain/corpus.txt'))")
    corpus = Path(proc.stdout.strip())
    assert corpus.is_relative_to(installed.llmctl_home / "data"), corpus
    assert sha256(corpus) == sha256(ROOT / "data" / "pretrain" / "corpus.txt")
    assert "generating the embedded demo data" in proc.stderr
    # The second use finds the cache.
    again = installed.check("-c", "from llmctl import embedded; print(embedded.resolve('embedded:qa/train.jsonl'))")
    assert again.stderr == ""
    assert sha256(again.stdout.strip()) == sha256(ROOT / "data" / "qa" / "train.jsonl")
    assert list(installed.cwd.iterdir()) == []


def test_the_wheel_copy_ships_the_recipes(installed):
    # The sub-app on its own, independent of how the main CLI registers it.
    app = "import sys; from llmctl.recipes_cli import app; app(prog_name='llmctl recipes')"
    listing = installed.check("-c", app).stdout
    for name in ("gpt-small", "tiny/pretrain", "summarization"):
        assert name in listing
    proc = installed.check("-c", app, "copy", "recipes/tiny/summarization.toml")
    assert proc.stdout.splitlines()[0] == "wrote tiny-summarization.toml"
    assert (installed.cwd / "tiny-summarization.toml").read_bytes() == (ROOT / "recipes/tiny/summarization.toml").read_bytes()
    (installed.cwd / "tiny-summarization.toml").unlink()


def test_llmctl_recipes_from_any_directory(installed):
    assert "gpt-small" in installed.check("-m", "llmctl", "recipes").stdout
    proc = installed.check("-m", "llmctl", "recipes", "copy", "tiny/pretrain")
    assert proc.stdout.splitlines() == ["wrote tiny-pretrain.toml", "run it with: llmctl pretrain tiny-pretrain.toml"]
    copied = installed.cwd / "tiny-pretrain.toml"
    assert copied.read_bytes() == (ROOT / "recipes" / "tiny" / "pretrain.toml").read_bytes()
    copied.unlink()


def test_llmctl_pretrain_from_any_directory(installed):
    installed.check("-m", "llmctl", "pretrain", "tiny/pretrain", "--set", "train.max_steps=3", "--set",
                    "train.eval_every=3", "--set", "train.checkpoint_every=3", timeout=300)
    assert (installed.llmctl_home / "runs" / "tiny-pretrain" / "final").is_dir()
    assert not (installed.cwd / "runs").exists()


def test_finetune_on_your_csv_then_eval_another_file_from_any_directory(installed):
    """The issue's check: a CSV with string labels and its own column names, fine-tuned with a shipped recipe
    from an empty directory, then `eval` of that run on another file."""
    import csv
    import json

    rows = [json.loads(line) for line in (ROOT / "data" / "classification" / "train.jsonl").read_text().splitlines()]
    for name, part in (("reviews.csv", rows[:600]), ("other.csv", rows[600:680])):
        with open(installed.cwd / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "sentiment"])
            writer.writerows([r["text"], r["label"]] for r in part)
    installed.check("-m", "llmctl", "finetune", "tiny/classification", "--data", "reviews.csv",
                    "--set", "data.text_column=review", "--set", "data.label_column=sentiment",
                    "--set", "train.max_steps=10", "--set", "train.eval_every=10", timeout=300)
    run = installed.llmctl_home / "runs" / "tiny-classification"
    results = json.loads((run / "results.json").read_text())
    # Validation is held out from reviews.csv (3% of 600 records), never the recipe's embedded file.
    assert results["validation_examples"] == 18
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 18 and all(p["where"].startswith("reviews.csv:") for p in preds)
    assert {p["reference"] for p in preds} <= {"positive", "negative", "neutral"}

    installed.check("-m", "llmctl", "eval", "--model", str(run / "final"), "--data", "other.csv",
                    "--output", "other.json", timeout=300)
    scored = json.loads((installed.cwd / "other.json").read_text())
    assert scored["examples"] == 80
    lines = [json.loads(line) for line in (installed.cwd / "other.predictions.jsonl").read_text().splitlines()]
    assert [p["where"] for p in lines] == [f"other.csv:{i}" for i in range(2, 82)]
    right = sum(p["prediction"] == p["reference"] for p in lines)
    assert scored["metrics"]["accuracy.accuracy"] == pytest.approx(right / 80)
