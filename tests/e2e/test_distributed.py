"""Two gloo processes on the CPU prove the multi-process paths: fine-tuning equals one process with the same
global batch and seed (metrics and final weights), eval and summarize give the outputs of one process in input
order, and SIGTERM sent to one process stops both at one step with one checkpoint that resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, cli

NO_DROPOUT = ["--set", "model.config.hidden_dropout_prob=0.0",
              "--set", "model.config.attention_probs_dropout_prob=0.0"]


def weights(final: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(final / "model.safetensors")


def test_finetune_on_two_processes_equals_one(tmp_path):
    """Global batch 16: one process accumulates 2 micro-batches of 8, two processes take one each."""
    common = ["recipes/tiny/classification.toml", "--set", "train.max_steps=10", "--set", "train.batch_size=16",
              "--set", "train.micro_batch_size=8", "--set", "train.eval_every=5", "--set", "train.log_every=5",
              *NO_DROPOUT]
    one, two = tmp_path / "one", tmp_path / "two"
    cli("finetune", *common, "-o", str(one), check=True)
    proc = cli("finetune", *common, "-o", str(two), "--num-processes", "2", check=True)
    assert "2 process(es)" in proc.stdout
    a, b = (json.loads((run / "results.json").read_text()) for run in (one, two))
    assert b["world_size"] == 2 and a["world_size"] == 1
    for key, value in a["metrics"].items():
        if isinstance(value, float):
            assert b["metrics"][key] == pytest.approx(value, abs=1e-5), key
    assert b["best_step"] == a["best_step"]
    wa, wb = weights(one / "final"), weights(two / "final")
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-5, worst
    # Every process predicted its share; the predictions file holds each validation record once, in order.
    rows_a = (one / "predictions.jsonl").read_text().splitlines()
    rows_b = (two / "predictions.jsonl").read_text().splitlines()
    assert rows_a == rows_b and len(rows_a) == a["validation_examples"]


@pytest.fixture(scope="module")
def summarizer(tmp_path_factory):
    run = tmp_path_factory.mktemp("sum") / "runs" / "sum"
    cli("finetune", "recipes/tiny/summarization.toml", "-o", str(run), check=True)
    return run


def test_eval_on_two_processes_equals_one(summarizer, tmp_path):
    outs = []
    for n in (1, 2):
        out = tmp_path / f"eval{n}.json"
        cli("eval", "--model", str(summarizer / "final"), "--output", str(out), "--num-processes", str(n),
            check=True)
        outs.append(out)
    a, b = (json.loads(p.read_text()) for p in outs)
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert a["metrics"] == b["metrics"]
    pa, pb = (p.with_name(p.stem + ".predictions.jsonl").read_text() for p in outs)
    assert pa == pb
    ids = [json.loads(line)["id"] for line in pa.splitlines()]
    assert ids == list(range(len(ids)))  # input order


def test_summarize_on_two_processes_equals_one(summarizer, tmp_path):
    docs = tmp_path / "docs.jsonl"
    texts = [f"Ulla Brenk opened bakery number {i} in Varnhold on {i + 1} May. It sells rye bread." * (1 + i % 3)
             for i in range(11)]
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    got = []
    for n in (1, 2):
        out = tmp_path / f"s{n}.jsonl"
        cli("summarize", "--model", str(summarizer / "final"), str(docs), "--output", str(out), "--batch-size", "2",
            "--num-processes", str(n), check=True)
        got.append([json.loads(line) for line in out.read_text().splitlines()])
    assert got[0] == got[1]
    assert [r["id"] for r in got[1]] == [f"d{i}" for i in range(11)]  # one output, in input order


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _rank_one_worker(pid: int) -> int | None:
    """The worker process with RANK=1 below `pid` (llmctl -> accelerate launch -> workers)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in _children(p):
            try:
                env = Path(f"/proc/{c}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"RANK=1" in env:
                return c
            todo.append(c)
    return None


def test_sigterm_to_one_of_two_processes_checkpoints_once_and_resumes_exactly(small_corpus, tmp_path):
    def args(run, *more):
        return ["pretrain", "recipes/tiny/pretrain.toml", "-o", str(run), "--set",
                f'data.train_files=["{small_corpus}"]', "--set", "data.block_size=64", "--set", "train.max_steps=80",
                "--set", "train.checkpoint_every=5", "--set", "train.eval_every=1000", "--set", "train.log_every=1",
                "--num-processes", "2", *more]

    ref, run = tmp_path / "ref", tmp_path / "run"
    cli(*args(ref), check=True, timeout=600)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", *args(run)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-5" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    worker = _rank_one_worker(proc.pid)
    assert worker is not None
    os.kill(worker, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    assert "stopped at step" in err and "SIGTERM" in err and "continue with --resume" in err
    assert not (run / "results.json").exists()
    steps = sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    stopped = steps[-1]
    assert 5 <= stopped < 80, steps  # stopped part-way, at a step both processes agreed on
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    state = json.loads((run / "checkpoints" / f"step-{stopped}" / "trainer_state.json").read_text())
    assert state["step"] == stopped

    cli(*args(run, "--resume"), check=True, timeout=600)
    read = lambda r: [json.loads(line) for line in (r / "log.jsonl").read_text().splitlines()]  # noqa: E731
    got, want = read(run), read(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        if "loss" in w:
            assert g["loss"] == pytest.approx(w["loss"], abs=1e-5), g["step"]
