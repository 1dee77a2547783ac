"""The real CLI on the tiny preset: preprocess -> pretrain -> eval, reload, resume, refusals."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli

TINY = "recipes/tiny/pretrain.toml"


def tiny_args(corpus, out, *extra):
    return [TINY, "--output-dir", str(out), "--set", f'data.train_files=["{corpus}"]', *extra]


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    first = cli("preprocess", *tiny_args(small_corpus, run), check=True)
    again = cli("preprocess", *tiny_args(small_corpus, run), check=True)
    train = cli("pretrain", *tiny_args(small_corpus, run), check=True)
    return run, first, again, train


def test_preprocess_then_cache_hit(trained):
    run, first, again, _ = trained
    assert "unigram baseline perplexity" in first.stdout
    assert "cache hit" in again.stdout and "nothing to do" in again.stdout
    meta = json.loads((run / "data" / "meta.json").read_text())
    assert meta["train"]["tokens"] > 0 and meta["validation"]["tokens"] > 0
    assert (run / "tokenizer" / "tokenizer.json").exists()


def test_run_directory_contents(trained):
    run, *_ = trained
    for name in ("recipe.toml", "log.jsonl", "results.json", "final/config.json", "final/model.safetensors",
                 "final/tokenizer.json", "checkpoints/step-20/trainer_state.json"):
        assert (run / name).exists(), name
    assert not (run / "checkpoints" / "step-10").exists() or (run / "checkpoints" / "step-20").exists()
    log = read_log(run)
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [5, 10, 15, 20]
    for r in steps:
        assert {"step", "loss", "lr", "tokens_per_sec"} <= set(r) and math.isfinite(r["loss"])
    assert steps[-1]["loss"] < steps[0]["loss"]
    results = json.loads((run / "results.json").read_text())
    for key in ("train_loss", "val_loss", "val_perplexity", "parameters", "tokens_seen", "wall_seconds",
                "tokens_per_sec", "unigram_perplexity", "initial_val_perplexity"):
        assert results[key] is not None, key
    assert results["val_perplexity"] < results["initial_val_perplexity"]
    # Real tokens, not padding: only the split's last (short) block can hold padding.
    assert 20 * 8 * 64 - 64 < results["tokens_seen"] <= 20 * 8 * 64
    recipe = (run / "recipe.toml").read_text()
    assert "max_steps = 20" in recipe and "[train]" in recipe


def test_eval_matches_training_validation(trained, tmp_path):
    run, *_ = trained
    out = tmp_path / "ppl.json"
    proc = cli("eval", "--metric", "perplexity", "--model", str(run / "final"), "--data", str(run / "data" / "validation"),
               "--output", str(out), check=True)
    assert "perplexity" in proc.stdout
    got = json.loads(out.read_text())["metrics"]
    results = json.loads((run / "results.json").read_text())
    assert got["perplexity"] == pytest.approx(results["val_perplexity"], rel=1e-5)


def test_eval_on_a_text_file(trained, small_corpus, tmp_path):
    run, *_ = trained
    out = tmp_path / "ppl.json"
    cli("eval", "--model", str(run / "final"), "--data", str(small_corpus), "--output", str(out), check=True)
    got = json.loads(out.read_text())["metrics"]
    assert math.isfinite(got["perplexity"]) and got["tokens"] > 1000


def test_final_reloads_with_plain_transformers(trained):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, *_ = trained
    model = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    tok = AutoTokenizer.from_pretrained(run / "final")
    assert tok.eos_token == "<|endoftext|>"
    blocks = datasets.load_from_disk(str(run / "data" / "validation"))["input_ids"]
    nll, n = 0.0, 0
    with torch.no_grad():
        for ids in blocks:
            x = torch.tensor([ids])
            loss = model(input_ids=x, labels=x).loss
            nll += loss.item() * (len(ids) - 1)
            n += len(ids) - 1
    results = json.loads((run / "results.json").read_text())
    assert nll / n == pytest.approx(results["val_loss"], rel=1e-4)


def test_refuses_to_overwrite_a_finished_run(trained, small_corpus):
    run, *_ = trained
    before = (run / "results.json").read_bytes()
    proc = cli("pretrain", *tiny_args(small_corpus, run))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: {run} already holds a finished run (results.json exists); "
        "pass --overwrite to replace it or --resume to continue it"
    )
    assert (run / "results.json").read_bytes() == before


def test_resume_after_a_kill_continues_at_the_checkpoint(small_corpus, tmp_path):
    """Kill -9 a run after its step-10 checkpoint, resume it, and get the uninterrupted run's losses."""
    steps = ["--set", "train.max_steps=60", "--set", "train.checkpoint_every=10", "--set", "train.log_every=5",
             "--set", "train.eval_every=20"]
    ref = tmp_path / "ref"
    cli("pretrain", *tiny_args(small_corpus, ref, *steps), check=True)

    run = tmp_path / "killed"
    cli("preprocess", *tiny_args(small_corpus, run, *steps), check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", *tiny_args(small_corpus, run, *steps)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-10" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "results.json").exists(), "the run finished before it could be killed"

    refused = cli("pretrain", *tiny_args(small_corpus, run, *steps))
    assert refused.returncode == 1 and "pass --resume" in refused.stderr
    resumed = cli("pretrain", *tiny_args(small_corpus, run, *steps, "--resume"), check=True)
    assert "resume: continuing from" in resumed.stdout

    got, want = read_log(run), read_log(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for key in ("loss", "val_loss"):
            if key in w:
                assert g[key] == pytest.approx(w[key], abs=1e-5), (g["step"], key)


def test_two_processes_match_one(small_corpus, tmp_path):
    """Same global batch and seed: 2 gloo processes x 1 micro-batch == 1 process x 2 accumulated."""
    common = ["--set", "train.max_steps=10", "--set", "train.log_every=2", "--set", "train.eval_every=10"]
    one, two = tmp_path / "one", tmp_path / "two"
    cli("pretrain", *tiny_args(small_corpus, one, *common), check=True)
    proc = cli("pretrain", *tiny_args(small_corpus, two, *common, "--num-processes", "2"), check=True)
    assert "2 process(es) on cpu" in proc.stdout
    a, b = read_log(one), read_log(two)
    assert json.loads((two / "results.json").read_text())["world_size"] == 2
    for x, y in zip(a, b):
        assert x["step"] == y["step"]
        if "loss" in x:
            assert y["loss"] == pytest.approx(x["loss"], abs=2e-3)
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], abs=2e-3)


def test_shipped_tiny_preset_runs_unchanged(tmp_path):
    proc = cli("pretrain", TINY, "--output-dir", str(tmp_path / "run"), check=True)
    assert (tmp_path / "run" / "results.json").exists()
    assert "results:" in proc.stdout


def test_ctrl_c_saves_a_checkpoint_at_the_step_boundary(small_corpus, tmp_path):
    run = tmp_path / "int"
    args = tiny_args(small_corpus, run, "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=5",
                     "--set", "train.eval_every=100000")
    cli("preprocess", *args, check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-5" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: stopped at step ") and line.endswith("; continue with --resume")
    step = int(line.split("stopped at step ")[1].split(" ")[0])
    assert "(SIGINT)" in line
    state = json.loads((run / "checkpoints" / f"step-{step}" / "trainer_state.json").read_text())
    assert state["step"] == step and not (run / "results.json").exists()
