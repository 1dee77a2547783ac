"""Shared helpers: the repository root, a small corpus cut from the embedded one, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "pretrain" / "corpus.txt"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cli(*args: str, cwd: Path = ROOT, check: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `llmctl` entry point in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmctl {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """The first 400 documents of the embedded corpus: real text, fast to preprocess."""
    docs = CORPUS.read_text(encoding="utf-8").split("\n\n")[:400]
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def perturb(model_dir: Path, std: float) -> None:
    """Larger random weights on top of a few-step model's (which repeats one token whatever its input, so that
    comparisons of its outputs would pass trivially), seeded; its config, and so its task, is kept."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(model_dir)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    model.save_pretrained(model_dir)
