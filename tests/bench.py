"""`make bench`: the speed and memory figures llmctl promises, measured and printed (never asserted in tests).

    python tests/bench.py            # all benchmarks (tens of minutes on 2 CPU cores; name some to run fewer)
    python tests/bench.py startup    # one of: startup, preprocess, memory, finetune-data, train, resume, plan,
                                     # preprocess-peer, pretrain-peers, compress, serve,
                                     # finetune-batches, generate
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "pretrain" / "corpus.txt"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # this process loads a model too (bench_plan)


def llmctl(*args: str, check: bool = True) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run the CLI; return (wall seconds, peak RSS in MiB of its largest process, the completed process)."""
    result = measure([sys.executable, "-m", "llmctl", *args], ENV, check=check)
    return result["wall"], result["rss"], result["process"]


def measure(cmd: list[str], env: dict, *, check: bool = True) -> dict:
    """Run a command: {wall seconds, cpu seconds (user + system, its worker processes included), peak RSS in MiB of
    its largest process, peak in MiB of the memory of all its processes together (the sum of their PSS, in which a
    page shared by forked workers counts once), its stdout, the CompletedProcess}, the memory sampled every 50 ms.
    With `check`, a failing command exits with its stderr."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    streams: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name: streams.__setitem__(name, getattr(proc, name).read()))
               for name in ("stdout", "stderr")]
    done = threading.Event()
    tree_peak = [0]
    process_peak = [0]

    def sample():
        try:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        info = p.memory_full_info()
                    except psutil.Error:
                        continue
                    total += info.pss
                    process_peak[0] = max(process_peak[0], info.rss)
                tree_peak[0] = max(tree_peak[0], total)
                time.sleep(0.05)
        except psutil.Error:
            pass

    threads = [*readers, threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    for t in threads:
        t.join()
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{streams.get('stderr', '')[-2000:]}")
    # CPU time from wait4 covers the children the process reaped (llmctl's workers) as well. Its peak RSS
    # (ru_maxrss) is not used: Linux carries the memory high-water mark of the process that exec replaced into
    # it, and subprocess starts commands with vfork, so ru_maxrss would include this benchmark's own peak (up to
    # 446 MiB once it has compared blocks with datasets), not only the command's. The sampled RSS of the largest
    # process is the command's own.
    out, err = streams.get("stdout", ""), streams.get("stderr", "")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": process_peak[0] // (1 << 20),
            "tree": tree_peak[0] // (1 << 20), "stdout": out,
            "process": subprocess.CompletedProcess(cmd, code, out, err)}


def row(name: str, value: str, note: str = "") -> None:
    """One figure of the printed table (every benchmark file prints through this)."""
    print(f"{name:<44} {value:>16}  {note}", flush=True)


def bench_startup() -> None:
    times = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmctl", "--help"], cwd=ROOT, env=ENV, capture_output=True,
                       check=True)
        times.append(time.perf_counter() - start)
    row("llmctl --help (median of 7)", f"{statistics.median(times):.3f} s", "target < 0.5 s")


def _preprocess(tmp: Path, corpus: Path, name: str):
    return llmctl("preprocess", "recipes/gpt-small.toml", "-o", str(tmp / name),
                  "--set", f'data.train_files=["{corpus}"]')


def bench_preprocess() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wall, rss, _ = _preprocess(tmp, CORPUS, "run")
        meta = json.loads((tmp / "run" / "data" / "meta.json").read_text())
        tokens = meta["train"]["tokens"] + meta["validation"]["tokens"]
        row("preprocess embedded corpus, cold", f"{wall:.1f} s",
            f"{CORPUS.stat().st_size / 1e6:.1f} MB, {tokens:,} tokens, BPE training included")
        row("  in-process work (meta.json seconds)", f"{meta['seconds']:.1f} s",
            f"{tokens / meta['seconds']:,.0f} tokens/s end to end")
        wall2, _, proc = _preprocess(tmp, CORPUS, "run")
        assert "cache hit" in proc.stdout
        row("preprocess rerun, unchanged (cache hit)", f"{wall2:.2f} s", "hashes the inputs, does no work")


def bench_memory() -> None:
    """Peak RSS of preprocess as the corpus grows 1x -> 4x: memory-mapped Arrow keeps it near flat."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = CORPUS.read_text(encoding="utf-8")
        results = []
        for times in (1, 4):
            corpus = tmp / f"corpus{times}.txt"
            corpus.write_text("\n\n".join([text.strip()] * times) + "\n", encoding="utf-8")
            _, rss, _ = _preprocess(tmp, corpus, f"run{times}")
            results.append(rss)
            row(f"preprocess peak RSS, corpus x{times}", f"{rss:,} MiB", f"{corpus.stat().st_size / 1e6:.1f} MB of text")
        row("  RSS growth for 4x the text", f"{results[1] / results[0]:.2f}x", "bounded: far below 4x")


def bench_finetune_data() -> None:
    """Fine-tuning data through datasets: records -> tokenizer -> features, cold and cached, and peak RSS as the
    training data grows 20x (the validation file stays the same)."""
    train = ROOT / "data" / "summarization" / "train.jsonl"
    val = ROOT / "data" / "summarization" / "validation.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
        rss = {}
        for times in (1, 20):
            data = tmp / f"train{times}.jsonl"
            data.write_text("".join(lines * times), encoding="utf-8")
            args = ["preprocess", "summarization", "--data", str(data), "--validation-data", str(val),
                    "-o", str(tmp / f"run{times}")]
            wall, rss[times], _ = llmctl(*args)
            row(f"finetune preprocess x{times}, cold", f"{wall:.1f} s",
                f"{len(lines) * times:,} summarization records, {data.stat().st_size / 1e6:.1f} MB; "
                f"peak RSS {rss[times]:,} MiB")
            again, _, proc = llmctl(*args)
            assert "reused records, tokenizer, spec, features" in proc.stdout, proc.stdout
            row(f"finetune preprocess x{times}, cached", f"{again:.1f} s", "every stage reused")
        row("  peak RSS growth for 20x the data", f"{rss[20] / rss[1]:.2f}x", "flat: the splits are memory-mapped")


def bench_train() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        llmctl("pretrain", "recipes/gpt-small.toml", "-o", str(out), "--set", "train.max_steps=60",
               "--set", "train.eval_every=60", "--set", "train.log_every=20")
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        steady = [r["tokens_per_sec"] for r in log if r.get("tokens_per_sec")][1:]
        res = json.loads((out / "results.json").read_text())
        row("pretrain gpt-small, steady tokens/s", f"{statistics.mean(steady):,.0f}",
            f"{res['parameters'] / 1e6:.2f}M parameters, fp32, {os.cpu_count()} CPU threads")


def bench_resume() -> None:
    """Resume skips to its position in O(1): the time to the first new step does not grow with the step."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args = ["recipes/tiny/pretrain.toml", "--set", "train.checkpoint_every=200", "--set", "train.eval_every=400",
                "--set", "train.log_every=100"]
        for at in (200, 2000):
            out = tmp / f"r{at}"
            llmctl("pretrain", *args, "-o", str(out), "--set", f"train.max_steps={at}",
                   "--set", f"train.checkpoint_every={at}")
            llmctl("preprocess", *args, "-o", str(tmp / f"f{at}"))  # not timed: both sides reuse the cache
            fresh, _, _ = llmctl("pretrain", *args, "-o", str(tmp / f"f{at}"), "--set", "train.max_steps=1")
            wall, _, _ = llmctl("pretrain", *args, "-o", str(out), "--resume", "--set", f"train.max_steps={at + 1}",
                                "--set", f"train.checkpoint_every={at}")
            row(f"resume at step {at} and train 1 step", f"{wall:.1f} s", f"a fresh 1-step run: {fresh:.1f} s")


def _cpu_gemm_peak() -> float:
    """FLOP/s of a large fp32 matrix product on this CPU, in this process (the ceiling MFU is measured against)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start)


def bench_plan() -> None:
    """Internet scale on paper, every input measured in this run or counted from the model: the CPU's MFU on the
    demo model, carried over to gpt2-124m on one H100 (an assumption, said so), 10B tokens of pretraining in GPU
    hours, 10B tokens of preprocessing with K shard jobs, and the memory per parameter that picks DDP or FSDP."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmctl import flops

    torch.set_num_threads(os.cpu_count())
    peak = _cpu_gemm_peak()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        llmctl("pretrain", "recipes/gpt-small.toml", "-o", str(out), "--set", "train.max_steps=60",
               "--set", "train.eval_every=60", "--set", "train.log_every=20")
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        tok_s = statistics.mean([r["tokens_per_sec"] for r in log if r.get("tokens_per_sec")][1:])
        small = AutoModelForCausalLM.from_pretrained(out / "final")
        per_token_small = flops.flops_per_token(small, 128)
        pre = Path(tmp) / "pre"
        llmctl("preprocess", "recipes/gpt-small.toml", "-o", str(pre))
        meta = json.loads((pre / "data" / "meta.json").read_text())
        pre_rate = (meta["train"]["tokens"] + meta["validation"]["tokens"]) / meta["seconds"]
    cpu_mfu = tok_s * per_token_small / peak
    row("CPU fp32 GEMM peak (2048^2, this run)", f"{peak / 1e9:,.0f} GFLOP/s", f"{os.cpu_count()} CPU threads")
    row("gpt-small training FLOPs per token", f"{per_token_small / 1e6:,.1f} MFLOP", "6 x matmul weights + attention")
    row("gpt-small CPU MFU", f"{cpu_mfu:.2f}", f"{tok_s:,.0f} tokens/s against the GEMM peak")
    config = AutoConfig.for_model("gpt2", n_positions=1024, vocab_size=50257)
    with torch.device("meta"):
        big = AutoModelForCausalLM.from_config(config)
    per_token_big = flops.flops_per_token(big, 1024)
    h100 = flops.peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    gpu_tok_s = cpu_mfu * h100 / per_token_big
    row("gpt2-124m training FLOPs per token", f"{per_token_big / 1e9:,.2f} GFLOP", "context 1,024")
    row("gpt2-124m on one H100 (bf16), at that MFU", f"{gpu_tok_s:,.0f} tokens/s",
        f"H100 SXM dense bf16 peak {h100 / 1e12:,.0f} TFLOP/s; assumes the CPU's MFU carries over")
    row("10B tokens of gpt2-124m", f"{10e9 / gpu_tok_s / 3600:,.1f} GPU-hours",
        f"= {10e9 / gpu_tok_s / 3600 / 8:,.1f} h on one 8-GPU node")
    row("preprocess throughput, one 2-core job", f"{pre_rate:,.0f} tokens/s", "BPE training included")
    for k in (1, 16, 256):
        row(f"10B tokens of preprocessing, {k} shard job(s)", f"{10e9 / pre_rate / k / 60:,.0f} min",
            "--shard I/K, each job on its own 2 cores")
    row("training memory per parameter (bf16 + fp32 Adam)", "16 bytes", "weights 2+4, grads 2, Adam 8; no activations")
    row("  largest model DDP fits on an 80 GB GPU", f"{80e9 / 16 / 1e9:,.1f}B parameters",
        "before activations; beyond: FSDP or DeepSpeed ZeRO-3 shard it over the GPUs")


def bench_compress() -> None:
    from bench_deploy import bench_compress as run

    run()


def bench_serve() -> None:
    from bench_deploy import bench_serve as run

    run()


def bench_preprocess_peer() -> None:
    from bench_prep import bench_preprocess_vs_peer

    bench_preprocess_vs_peer()


def bench_pretrain_peers() -> None:
    from bench_train import bench_allocator, bench_gemm_ceiling, bench_pretrain_vs_peers, bench_step_variants

    bench_step_variants("demo")
    bench_pretrain_vs_peers()
    bench_gemm_ceiling("13.9M")
    bench_allocator("13.9M")


def bench_finetune_batches() -> None:
    from bench_finetune import main as run
    from bench_finetune import step_costs

    step_costs()
    run([])


def bench_generate() -> None:
    from bench_generate import bench_generate_vs_peer

    bench_generate_vs_peer()


BENCHES = {"startup": bench_startup, "preprocess": bench_preprocess, "memory": bench_memory,
           "finetune-data": bench_finetune_data,
           "train": bench_train, "resume": bench_resume, "plan": bench_plan,
           "preprocess-peer": bench_preprocess_peer, "pretrain-peers": bench_pretrain_peers,
           "compress": bench_compress, "serve": bench_serve, "finetune-batches": bench_finetune_batches,
           "generate": bench_generate}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHES)
    if {"-h", "--help"} & set(chosen):
        print(__doc__.strip())
        return
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(BENCHES)}")
    print(f"llmctl benchmarks on {os.cpu_count()} CPU threads ({time.strftime('%Y-%m-%d')})")
    for name in chosen:
        BENCHES[name]()


if __name__ == "__main__":
    main()
