"""Fault injection: a tiny pretraining run with dropout is killed with SIGKILL at named points (inside a checkpoint
write, between its rename and the pruning, inside the final export) and at random moments, or meets a full disk;
each time `--resume` completes it with exactly the uninterrupted run's final weights. Two runs started on one
directory at once: one trains, the other is refused with the holder's pid.

`LLMCTL_FAULT` (llmctl/faults.py) names the point where the process kills itself; the random moments are real
SIGKILLs from outside at seeded times."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_resume_exact import assert_same_weights, llmctl

PRETRAIN = "recipes/tiny/pretrain.toml"


def args(corpus, out):
    return [PRETRAIN, "-o", str(out), "--set", f'data.train_files=["{corpus}"]',
            "--set", "model.config.attention_dropout=0.1", "--set", "train.max_steps=12",
            "--set", "train.log_every=3", "--set", "train.eval_every=6", "--set", "train.checkpoint_every=4",
            "--set", "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("faults") / "ref"
    llmctl("pretrain", *args(small_corpus, run), check=True)
    return run


def resume_until_done(corpus, run, tries: int = 3) -> None:
    for _ in range(tries):
        if (run / "results.json").exists():
            return
        llmctl("pretrain", *args(corpus, run), "--resume", check=True)
    assert (run / "results.json").exists()


@pytest.mark.parametrize("fault", [
    pytest.param("checkpoint-files@2", marks=pytest.mark.slow),  # step-8's files written, no manifest yet
    "checkpoint-rename@2",  # step-8 complete in .tmp-step-8, not yet renamed
    pytest.param("checkpoint-prune@3", marks=pytest.mark.slow),  # step-12 renamed in, step-4 not yet pruned
    "export@1",             # final/ written to final.tmp, not yet swapped in
])
def test_kill_at_a_named_point_then_resume_gives_the_same_weights(fault, reference, small_corpus, tmp_path):
    run = tmp_path / "run"
    killed = llmctl("pretrain", *args(small_corpus, run), fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "results.json").exists()
    resume_until_done(small_corpus, run)
    assert_same_weights(run / "final", reference / "final")
    assert not list((run / "checkpoints").glob(".*-step-*")) and not (run / "final.tmp").exists()


def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing(reference, small_corpus, tmp_path):
    run = tmp_path / "run"
    full = llmctl("pretrain", *args(small_corpus, run), fault="checkpoint-files:enospc@2")
    assert full.returncode == 1
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], full.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4"]  # no half step-8
    from llmctl import checkpoint

    assert checkpoint.verify(run / "checkpoints" / "step-4") is None
    resume_until_done(small_corpus, run)
    assert_same_weights(run / "final", reference / "final")


def _kill_at_random(corpus, run, rng, *more) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LLMCTL_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", *args(corpus, run), *more], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(2.0, 14.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _random_kills(seed, reference, corpus, tmp_path):
    rng = random.Random(seed)
    run = tmp_path / f"seed-{seed}"
    _kill_at_random(corpus, run, rng)
    if (run / "recipe.toml").exists() and not (run / "results.json").exists() and rng.random() < 0.5:
        _kill_at_random(corpus, run, rng, "--resume")  # and once more, while resuming
    if not (run / "recipe.toml").exists():  # killed before the run directory was made: start it normally
        llmctl("pretrain", *args(corpus, run), check=True)
    resume_until_done(corpus, run)
    assert_same_weights(run / "final", reference / "final")
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (reference / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_random_kills_then_resume_give_the_same_weights(seed, reference, small_corpus, tmp_path):
    _random_kills(seed, reference, small_corpus, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 10))
def test_random_kills_then_resume_more_seeds(seed, reference, small_corpus, tmp_path):
    _random_kills(seed, reference, small_corpus, tmp_path)


@pytest.mark.slow
def test_two_runs_on_one_directory_one_is_refused(small_corpus, tmp_path):
    run = tmp_path / "run"
    llmctl("preprocess", *args(small_corpus, run), check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("LLMCTL_FAULT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", *args(small_corpus, run)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = next(err for p, (_, err) in zip(procs, outs) if p.returncode == 1)
    lines = refused.strip().splitlines()
    assert len(lines) == 1 and "pid" in lines[0], refused
    assert json.loads((run / "results.json").read_text())["steps"] == 12
