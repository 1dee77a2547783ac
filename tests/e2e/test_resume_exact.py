"""Resume is exact and honest: with dropout, a run killed between logging steps and resumed logs the same losses
and ends with the same weights as an uninterrupted run (pretraining and fine-tuning); a resume that would change
what the steps so far computed is refused without touching anything; a damaged newest checkpoint is skipped for
the one before it; a non-finite loss stops the run at that step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PRETRAIN = "recipes/tiny/pretrain.toml"
CLASSIFY = "recipes/tiny/classification.toml"
# Llama's attention dropout: every training step draws masks from the global RNG.
DROPOUT = ["--set", "model.config.attention_dropout=0.1"]


def llmctl(*args, fault: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("LLMCTL_FAULT", None)
    if fault:
        env["LLMCTL_FAULT"] = fault
    proc = subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmctl {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def assert_same_log(run: Path, reference: Path) -> None:
    """Every logged value equal, bit for bit, but the clock's (throughput, elapsed time, MFU)."""
    clock = ("tokens_per_sec", "elapsed", "mfu")
    got, want = log(run), log(reference)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in clock} == {k: v for k, v in w.items() if k not in clock}, \
            g["step"]


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def pretrain_args(corpus, out, *extra):
    return [PRETRAIN, "-o", str(out), "--set", f'data.train_files=["{corpus}"]', *DROPOUT,
            "--set", "train.max_steps=16", "--set", "train.log_every=5", "--set", "train.eval_every=8",
            "--set", "train.checkpoint_every=6", "--set", "train.keep_checkpoints=3", *extra]


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    """An uninterrupted pretraining run with dropout and checkpoints at steps 6 and 12 (and 16)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    llmctl("pretrain", *pretrain_args(small_corpus, run), check=True)
    return run


def test_pretrain_killed_between_log_steps_resumes_exactly(reference, small_corpus, tmp_path):
    run = tmp_path / "killed"
    # SIGKILL right after the step-12 checkpoint is in place: between the logging steps 10 and 15.
    killed = llmctl("pretrain", *pretrain_args(small_corpus, run), fault="checkpoint-prune@2")
    assert killed.returncode == -9 and not (run / "results.json").exists()
    assert [r["step"] for r in log(run)][-1] == 10
    llmctl("pretrain", *pretrain_args(small_corpus, run), "--resume", check=True)
    assert_same_log(run, reference)
    assert_same_weights(run / "final", reference / "final")
    a, b = (json.loads((r / "results.json").read_text()) for r in (run, reference))
    assert a["tokens_seen"] == b["tokens_seen"] and a["val_loss"] == b["val_loss"]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(reference, small_corpus, tmp_path):
    import shutil

    run = tmp_path / "damaged"
    shutil.copytree(reference, run)
    (run / "results.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step-16")
    blob = run / "checkpoints" / "step-12" / "optimizer.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a bad sector, a torn copy
    blob.write_bytes(bytes(data))
    proc = llmctl("pretrain", *pretrain_args(small_corpus, run), "--resume", check=True)
    assert "step-12 cannot be used: optimizer.safetensors does not match its checksum" in proc.stdout
    assert "continuing from" in proc.stdout and "step 6 of 16" in proc.stdout
    assert_same_weights(run / "final", reference / "final")


def test_finetune_with_dropout_killed_and_resumed_equals_uninterrupted(tmp_path):
    """BERT's hidden and attention dropout (0.1 by default); the stop falls between logging steps, after a
    best/ export."""
    # Length-grouped batches: their order, too, must be a pure function of (seed, epoch).
    args = [CLASSIFY, "--set", "train.max_steps=10", "--set", "train.log_every=4", "--set", "train.eval_every=3",
            "--set", "train.checkpoint_every=3", "--set", "train.keep_checkpoints=4",
            "--set", "train.group_by_length=true"]
    ref, run = tmp_path / "ref", tmp_path / "killed"
    llmctl("finetune", *args, "-o", str(ref), check=True)
    killed = llmctl("finetune", *args, "-o", str(run), fault="checkpoint-prune@2")  # after the step-6 checkpoint
    assert killed.returncode == -9
    llmctl("finetune", *args, "-o", str(run), "--resume", check=True)
    assert_same_log(run, ref)
    assert_same_weights(run / "final", ref / "final")
    a, b = (json.loads((r / "results.json").read_text()) for r in (run, ref))
    assert a["best_step"] == b["best_step"] and a["metrics"] == b["metrics"]


def test_a_resume_that_changes_the_run_is_refused_and_touches_nothing(reference, small_corpus, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for change, named in ((["--set", "seed=8"], "seed"), (["--set", "train.lr=0.01"], "train.lr"),
                          (["--set", "train.warmup_steps=2"], "train.warmup_steps"),
                          (["--set", "model.config.attention_dropout=0.2"], "model.config.attention_dropout")):
        proc = llmctl("pretrain", *pretrain_args(small_corpus, run), *change, "--resume")
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot resume" in lines[0] and named in lines[0], proc.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".llmctl.lock"}
    assert after == {p: b for p, b in before.items() if p.name != ".llmctl.lock"}


@pytest.mark.slow
def test_a_resume_on_changed_data_is_refused(small_corpus, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(small_corpus.read_bytes())
    run = tmp_path / "run"
    args = pretrain_args(corpus, run, "--set", "train.max_steps=6")
    llmctl("pretrain", *args, check=True)
    corpus.write_bytes(small_corpus.read_bytes() + b"\nOne more sentence in the last document.\n")
    proc = llmctl("pretrain", *args, "--resume")
    assert proc.returncode == 1 and f"the content of {corpus} changed" in proc.stderr, proc.stderr
    assert (run / "results.json").exists()


@pytest.mark.slow
def test_more_steps_and_other_intervals_may_be_resumed(reference, small_corpus, tmp_path):
    import shutil

    run = tmp_path / "longer"
    shutil.copytree(reference, run)
    proc = llmctl("pretrain", *pretrain_args(small_corpus, run), "--set", "train.max_steps=18",
                  "--set", "train.log_every=2", "--set", "train.checkpoint_every=9", "--resume", check=True)
    assert "step 16 of 18" in proc.stdout
    assert [r["step"] for r in log(run)][-2:] == [16, 18]


def test_a_non_finite_loss_stops_at_its_step_and_logs_stay_json(small_corpus, tmp_path):
    run = tmp_path / "nan"
    args = pretrain_args(small_corpus, run)
    proc = llmctl("pretrain", *args, fault="nonfinite-loss@8")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: step 8: the loss or gradient norm is not finite"), \
        proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-6"]  # nothing from step 8 on
    assert [r["step"] for r in log(run)][-1] == 5 and not (run / "results.json").exists()
    # Allowed to skip one: the run completes, the skipped update is counted and every log line is JSON.
    ok = tmp_path / "skipped"
    llmctl("pretrain", *pretrain_args(small_corpus, ok), "--set", "train.skip_nonfinite=1",
           fault="nonfinite-loss@8", check=True)
    text = (ok / "log.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert all(json.loads(line)["step"] >= 0 for line in text.splitlines())
    state = json.loads((ok / "checkpoints" / "step-16" / "trainer_state.json").read_text())
    assert state["skipped_nonfinite"] == 1


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_recipe_numbers_are_refused(value, tmp_path):
    proc = llmctl("pretrain", PRETRAIN, "-o", str(tmp_path / "r"), "--set", f"train.lr={value}", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.lr" in lines[0] and "finite" in lines[0], proc.stderr
