"""train.precision = "bf16" on a CPU: the real CLI trains in bf16 autocast, learns past the unigram baseline and
says which precision it used; "fp16" on a CPU is one error line."""

import json
import math

from conftest import cli

TINY = "recipes/tiny/pretrain.toml"


def test_bf16_on_cpu_trains_past_the_unigram_baseline(small_corpus, tmp_path):
    run = tmp_path / "bf16"
    proc = cli("pretrain", TINY, "--output-dir", str(run), "--set", f'data.train_files=["{small_corpus}"]',
               "--set", 'train.precision="bf16"', "--set", "train.max_steps=60", "--set", "train.eval_every=30",
               "--set", "train.checkpoint_every=60", "--set", "train.compile=false", check=True)
    assert "precision bf16" in proc.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["precision"] == "bf16"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert results["val_perplexity"] < 0.9 * results["unigram_perplexity"] < results["initial_val_perplexity"]


def test_fp16_on_cpu_is_one_error_line(small_corpus, tmp_path):
    proc = cli("pretrain", TINY, "--output-dir", str(tmp_path / "fp16"), "--set",
               f'data.train_files=["{small_corpus}"]', "--set", 'train.precision="fp16"')
    assert proc.returncode != 0
    assert 'train.precision = "fp16" needs a GPU' in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
