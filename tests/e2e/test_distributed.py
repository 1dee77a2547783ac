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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_of_one_process_equal_one_machine_of_two(tmp_path):
    """The multi-node path on one host: two independent llmctl commands, --num-machines 2 with ranks 0 and 1 and a
    rendezvous on 127.0.0.1 (the run directory stands for a shared filesystem), train what --num-processes 2 on one
    machine trains: the same losses and final weights."""
    common = ["finetune", "recipes/tiny/classification.toml", "--set", "train.max_steps=6", "--set",
              "train.batch_size=16", "--set", "train.micro_batch_size=8", "--set", "train.eval_every=3",
              "--set", "train.log_every=3", *NO_DROPOUT]
    local, nodes = tmp_path / "local", tmp_path / "nodes"
    cli(*common, "-o", str(local), "--num-processes", "2", check=True)
    port = str(_free_port())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-m", "llmctl", *common, "-o", str(nodes), "--num-machines", "2",
                               "--machine-rank", str(rank), "--main-process-ip", "127.0.0.1",
                               "--main-process-port", port], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (out, err)
    assert "machine 0 of 2" in outs[0][1] and "machine 1 of 2" in outs[1][1]
    a, b = (json.loads((run / "results.json").read_text()) for run in (local, nodes))
    assert a["world_size"] == b["world_size"] == 2
    la = [json.loads(x) for x in (local / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (nodes / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for x, y in zip(la, lb):
        for key in ("loss", "val_loss"):
            if key in x:
                assert y[key] == pytest.approx(x[key], abs=1e-5), (x["step"], key)
    wa, wb = weights(local / "final"), weights(nodes / "final")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


def test_multi_node_flags_are_checked():
    proc = cli("pretrain", "recipes/tiny/pretrain.toml", "--num-machines", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --num-machines > 1 needs --main-process-ip (the address of machine 0)"
    proc = cli("pretrain", "recipes/tiny/pretrain.toml", "--num-machines", "2", "--machine-rank", "2",
               "--main-process-ip", "127.0.0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --machine-rank 2 must be below --num-machines 2"


def test_the_slurm_example_runs_on_two_local_nodes(tmp_path):
    """examples/slurm/pretrain.sbatch run as Slurm would, with stand-ins for srun (two tasks, node ids 0 and 1,
    on this host) and scontrol: it trains one run with both nodes' processes (world size 2)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf '127.0.0.1\\n127.0.0.1\\n'\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        "shift  # --kill-on-bad-exit=1\n"
        "SLURM_NODEID=0 \"$@\" & a=$!\n"
        "SLURM_NODEID=1 \"$@\" & b=$!\n"
        "wait $a; ra=$?; wait $b; rb=$?\n"
        "exit $(( ra || rb ))\n")
    for name in ("scontrol", "srun"):
        (bin_dir / name).chmod(0o755)
    run = tmp_path / "slurm-run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "1",
           "SLURM_JOB_NAME": "tiny", "MAIN_PORT": str(_free_port()), "LLMCTL_RUN_DIR": str(run)}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "slurm" / "pretrain.sbatch"), "recipes/tiny/pretrain.toml",
                           "--set", "train.max_steps=4", "--set", "train.eval_every=4"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 4


def test_torchrun_launch_on_one_host(tmp_path):
    """llmctl inside a process torchrun started reads the launcher's environment (no relaunch)."""
    run = tmp_path / "tr"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "llmctl",
                           "pretrain", "recipes/tiny/pretrain.toml", "-o", str(run), "--set", "train.max_steps=4",
                           "--set", "train.eval_every=4"],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching" not in proc.stderr  # not relaunched: torchrun's processes train directly
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["steps"] == 4


def test_an_unreachable_rendezvous_is_one_line_after_the_timeout(tmp_path):
    """Machine 1 alone: nobody serves the rendezvous, so it gives up after --rendezvous-timeout with one line."""
    port = _free_port()
    start = time.time()
    proc = cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(tmp_path / "r"), "--num-machines", "2",
               "--machine-rank", "1", "--main-process-ip", "127.0.0.1", "--main-process-port", str(port),
               "--rendezvous-timeout", "5", timeout=120)
    assert time.time() - start < 60
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("launching")]
    assert lines == [f"error: cannot reach the rendezvous at 127.0.0.1:{port} within 5 s; start machine 0 "
                     "(--machine-rank 0) with the same --main-process-ip and --main-process-port, or raise "
                     "--rendezvous-timeout"], proc.stderr
