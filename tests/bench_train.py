"""Pretraining speed against its peers, measured in one run on one machine (issue 9, part 7; printed, never
asserted).

    python tests/bench_train.py             # both shapes, two rounds: about 30 minutes on 2 quiet CPU cores
    python tests/bench_train.py demo        # one shape: demo (gpt-small) or 13.9M
    python tests/bench_train.py 13.9M --steps 12 --repeats 2   # shorter runs on a busy machine
    python tests/bench_train.py --variants  # only fp32/bf16 x eager/compiled training steps, in one process
    python tests/bench_train.py --profile 13.9M   # where a compiled bf16 step's time goes (torch profiler)
    python tests/bench_train.py --gemm-ceiling 13.9M   # the MFU the step's matrix products alone would reach
    python tests/bench_train.py --allocator 13.9M   # llmctl pretrain with freed memory kept and with glibc's defaults

For each shape: `llmctl pretrain` in fp32 and bf16, eager and compiled (train.compile = true), transformers'
`Trainer` with its defaults and with its best settings (bf16 + torch.compile; tests/peers/trainer_peer.py), all on
the same packed blocks, alternating, in `--repeats` rounds; each figure is the best of its rounds. Tokens/s is the
steady rate (llmctl: the log windows after the first; Trainer: after as many steps), so compile time is left out
and reported on its own line (the first round's compiles are cold: the inductor cache starts empty). MFU is
against the GEMM peak of the same precision, measured in this process around the rounds.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import row

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# name -> (recipe overrides, the same shape for the peer, optimizer steps per run)
SHAPES = {
    "demo": dict(layers=4, width=192, heads=4, vocab=4096, block=128, batch=32, micro=16, steps=40),
    "13.9M": dict(layers=6, width=384, heads=6, vocab=8192, block=256, batch=8, micro=8, steps=30),
}


def log_every(shape: dict) -> int:
    """Four log windows per run; the first (warm-up) is left out of the steady rate, on both sides."""
    return max(1, shape["steps"] // 4)



def gemm_peak(dtype_name: str, n: int = 2048, reps: int = 8) -> float:
    """FLOP/s of an n^3 matrix product in fp32 or bf16 on this CPU, best of `reps` after a warm-up (the same
    measurement as llmctl's precision probe, on a larger shape)."""
    import torch

    from llmctl.precision import gemm_gflops

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    return gemm_gflops(dtype, (n, n, n), repeats=reps) * 1e9


def _sets(shape: dict) -> list[str]:
    config = (f"{{ n_layer = {shape['layers']}, n_head = {shape['heads']}, n_embd = {shape['width']}, "
              "resid_pdrop = 0.0, embd_pdrop = 0.0, attn_pdrop = 0.0 }")
    pairs = [f"model.config={config}", f"tokenizer.vocab_size={shape['vocab']}", f"data.block_size={shape['block']}",
             f"train.batch_size={shape['batch']}", f"train.micro_batch_size={shape['micro']}",
             f"train.max_steps={shape['steps']}", f"train.log_every={log_every(shape)}",
             f"train.eval_every={shape['steps']}", f"train.checkpoint_every={shape['steps']}", "train.eval_batches=2",
             "sample.prompts=[]"]
    return [a for p in pairs for a in ("--set", p)]


def _run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def llmctl_run(run: Path, shape: dict, precision: str, compiled: bool, env: dict) -> dict:
    """One short `llmctl pretrain` on the prepared run directory: steady tokens/s, compile seconds, losses."""
    _run([sys.executable, "-m", "llmctl", "pretrain", "recipes/gpt-small.toml", "-o", str(run), "--overwrite",
          *_sets(shape), "--set", f'train.precision="{precision}"', "--set",
          f"train.compile={'true' if compiled else 'false'}"], env)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_sec"] for r in log if r.get("tokens_per_sec")][1:]
    results = json.loads((run / "results.json").read_text())
    return {"tokens_per_sec": statistics.mean(rates), "compile_seconds": results.get("compile_seconds"),
            "val_loss": results.get("val_loss"), "precision": results.get("precision")}


def trainer_run(run: Path, shape: dict, mode: str, env: dict) -> dict:
    out = _run([sys.executable, str(ROOT / "tests" / "peers" / "trainer_peer.py"), str(run),
                "--layers", str(shape["layers"]), "--width", str(shape["width"]), "--heads", str(shape["heads"]),
                "--batch-size", str(shape["batch"]), "--micro-batch-size", str(shape["micro"]),
                "--steps", str(shape["steps"]), "--skip", str(log_every(shape)), "--mode", mode], env)
    return json.loads(out.strip().splitlines()[-1])


def flops_per_token(shape: dict, vocab: int) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmctl import flops

    config = AutoConfig.for_model("gpt2", n_layer=shape["layers"], n_head=shape["heads"], n_embd=shape["width"],
                                  n_positions=shape["block"], vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return flops.flops_per_token(model, shape["block"])


def bench_shape(name: str, shape: dict, tmp: Path, repeats: int = 2) -> None:
    env = {**ENV, "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}  # every compile cold
    run = tmp / name
    _run([sys.executable, "-m", "llmctl", "preprocess", "recipes/gpt-small.toml", "-o", str(run), *_sets(shape)], env)
    vocab = json.loads((run / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    per_token = flops_per_token(shape, len(vocab))
    peaks = {"fp32": gemm_peak("fp32"), "bf16": gemm_peak("bf16")}
    got = {}
    # Alternating llmctl and its peers, `repeats` rounds, each figure the best of its rounds: other work on a
    # shared machine only ever slows a run down. The first round's compiles are cold, later ones warm.
    jobs = (
        ("llmctl fp32", lambda: llmctl_run(run, shape, "fp32", False, env)),
        ("Trainer default", lambda: trainer_run(run, shape, "default", env)),
        ("llmctl bf16", lambda: llmctl_run(run, shape, "bf16", False, env)),
        ("Trainer best", lambda: trainer_run(run, shape, "best", env)),
        ("llmctl bf16 compiled", lambda: llmctl_run(run, shape, "bf16", True, env)),
        ("llmctl fp32 compiled", lambda: llmctl_run(run, shape, "fp32", True, env)),
    )
    for round_ in range(repeats):
        for key, job in jobs:
            r = job()
            print(f"    round {round_ + 1} {key}: {r['tokens_per_sec']:,.0f} tok/s"
                  + (f", compile {r['compile_seconds']:.1f} s" if r.get("compile_seconds") else ""), flush=True)
            if key not in got:
                got[key] = {**r, "compile_warm": None}
            else:
                got[key]["tokens_per_sec"] = max(got[key]["tokens_per_sec"], r["tokens_per_sec"])
                got[key]["compile_warm"] = r.get("compile_seconds")
        for precision in peaks:  # the best of the measurements around the rounds is the peak
            peaks[precision] = max(peaks[precision], gemm_peak(precision))

    params = f"{shape['layers']} layers x {shape['width']}, vocab {len(vocab):,}, seq {shape['block']}, " \
             f"batch {shape['batch']}, {shape['steps']} steps"
    print(f"\npretrain {name} ({params}); {per_token / 1e6:.1f} MFLOP per token")
    row("  GEMM peak fp32 / bf16 (2048^3, this run)", f"{peaks['fp32'] / 1e9:,.0f} / {peaks['bf16'] / 1e9:,.0f}",
        f"GFLOP/s; bf16 {peaks['bf16'] / peaks['fp32']:.1f}x")
    for key, r in got.items():
        precision = "bf16" if ("bf16" in key or key == "Trainer best") else "fp32"
        mfu = r["tokens_per_sec"] * per_token / peaks[precision]
        note = f"MFU {mfu:.2f} of the {precision} GEMM peak"
        if r.get("compile_seconds") is not None:
            note += f"; compile {r['compile_seconds']:.1f} s (not in tokens/s)"
        if r.get("val_loss") is not None:
            note += f"; val loss {r['val_loss']:.3f}"
        row(f"  {key}", f"{r['tokens_per_sec']:,.0f} tok/s", note)
    best_llmctl = max(("llmctl bf16 compiled", "llmctl bf16", "llmctl fp32 compiled", "llmctl fp32"),
                      key=lambda k: got[k]["tokens_per_sec"])
    rate = got[best_llmctl]["tokens_per_sec"]
    row("  llmctl best / Trainer default", f"{rate / got['Trainer default']['tokens_per_sec']:.2f}x",
        f"llmctl best = {best_llmctl}")
    row("  llmctl best / Trainer best", f"{rate / got['Trainer best']['tokens_per_sec']:.2f}x",
        "target >= 1.1x on a CPU with native bf16")
    fp32_ratio = got["llmctl fp32"]["tokens_per_sec"] / got["Trainer default"]["tokens_per_sec"]
    row("  llmctl fp32 / Trainer default", f"{fp32_ratio:.2f}x", "both fp32, eager")
    for precision in ("fp32", "bf16"):
        eager, comp = got[f"llmctl {precision}"], got[f"llmctl {precision} compiled"]
        gain = 1 / eager["tokens_per_sec"] - 1 / comp["tokens_per_sec"]  # seconds saved per token
        tokens_per_step = shape["batch"] * shape["block"]
        payback = comp["compile_seconds"] / (gain * tokens_per_step) if gain > 0 and comp["compile_seconds"] else None
        warm = f", {comp['compile_warm']:.1f} s warm" if comp.get("compile_warm") else ""
        row(f"  compile gain, {precision}", f"{comp['tokens_per_sec'] / eager['tokens_per_sec']:.2f}x",
            f"compile {comp['compile_seconds']:.1f} s cold{warm}; a cold compile pays back after "
            + (f"{payback:,.0f} steps" if payback else "never (no gain)"))


def bare_step_parts(shape: dict, attention: str | None = None):
    """(model, fused AdamW, the model compiled with static shapes, one micro-batch of random ids): a GPT-2 of the
    shape for the bare-loop benchmarks, without dropout, seeded, its tanh GELU fused as llmctl's training runs it
    (llmctl.modeling.fuse_activations)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmctl.modeling import fuse_activations

    config = AutoConfig.for_model("gpt2", n_layer=shape["layers"], n_head=shape["heads"], n_embd=shape["width"],
                                  n_positions=shape["block"], vocab_size=shape["vocab"], resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    fuse_activations(model)
    if attention:
        model.set_attn_implementation(attention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    compiled = torch.compile(model, dynamic=False)
    return model, optimizer, compiled, torch.randint(0, shape["vocab"], (shape["micro"], shape["block"]))


def bench_step_variants(name: str, rounds: int = 4) -> None:
    """One process, one GPT-2 of the shape, four ways of running the same training step (fp32 / bf16 autocast,
    eager / compiled, fused AdamW), interleaved step by step so that the machine's load falls on all of them
    alike; tokens/s is the best of `rounds` pairs of steps. Isolates what bf16 and torch.compile buy from
    everything else a run does (data, logging, evaluation)."""
    import torch

    shape = SHAPES[name]
    model, optimizer, compiled, ids = bare_step_parts(shape)
    accum = shape["batch"] // shape["micro"]

    def step(net, bf16: bool) -> None:
        for _ in range(accum):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = net(input_ids=ids, labels=ids).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants = {"fp32 eager": (model, False), "bf16 eager": (model, True), "fp32 compiled": (compiled, False),
                "bf16 compiled": (compiled, True)}
    compile_s = {}
    for key, (net, bf16) in variants.items():  # warm-up; for the compiled ones this is the (warm-cache) compile
        start = time.perf_counter()
        step(net, bf16)
        compile_s[key] = time.perf_counter() - start
    best = {key: float("inf") for key in variants}
    for _ in range(rounds):
        for key, (net, bf16) in variants.items():
            start = time.perf_counter()
            step(net, bf16)
            step(net, bf16)
            best[key] = min(best[key], (time.perf_counter() - start) / 2)
    tokens = shape["batch"] * shape["block"]
    print(f"\ntraining step variants, {name} shape, interleaved in one process (best of {rounds})")
    for key in variants:
        note = f"{best[key]:.3f} s per step of {tokens:,} tokens"
        if "compiled" in key:
            eager = best[key.replace("compiled", "eager")]
            first = compile_s[key] - eager
            note += f"; {eager / best[key]:.2f}x eager; first step (compile) {compile_s[key]:.1f} s"
            if eager > best[key]:
                note += f", pays back after {first / (eager - best[key]):,.0f} steps"
        row(f"  {key}", f"{tokens / best[key]:,.0f} tok/s", note)
    row("  bf16 / fp32, eager", f"{best['fp32 eager'] / best['bf16 eager']:.2f}x")


def bench_pretrain_vs_peers(shapes: list[str] | None = None, steps: int | None = None, repeats: int = 2) -> None:
    """make bench: llmctl pretrain against Trainer default and Trainer best, both shapes, with MFU.
    `steps` overrides each shape's optimizer steps per run; each figure is the best of `repeats` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes or list(SHAPES):
            shape = SHAPES[name] if steps is None else {**SHAPES[name], "steps": steps}
            bench_shape(name, shape, Path(tmp), repeats)


def bench_step_profile(name: str, rounds: int = 4) -> None:
    """Where a compiled bf16 training step of the shape spends its time, in a bare loop (eager attention, as
    llmctl uses under bf16 on a CPU; fused AdamW): the step with and without an all-ones attention mask
    (interleaved, best of `rounds`), then a torch profile of three steps split into matrix products, the fused
    kernels inductor generated, and the rest, with the largest generated kernels named."""
    import torch
    import torch._inductor.config as inductor
    from torch.profiler import ProfilerActivity, profile

    inductor.cpp.enable_kernel_profile = True  # the generated kernels appear in the profile under their names
    shape = SHAPES[name]
    model, optimizer, compiled, ids = bare_step_parts(shape, attention="eager")
    masks = {"no attention mask": {}, "all-ones attention mask": {"attention_mask": torch.ones_like(ids)}}

    def step(extra: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = compiled(input_ids=ids, labels=ids, **extra).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for extra in masks.values():  # compiles (one graph each)
        step(extra)
        step(extra)
    best = {key: float("inf") for key in masks}
    for _ in range(rounds):
        for key, extra in masks.items():
            start = time.perf_counter()
            step(extra)
            best[key] = min(best[key], time.perf_counter() - start)
    print(f"\ncompiled bf16 training step, {name} shape ({shape['micro']} x {shape['block']} tokens), bare loop, "
          f"best of {rounds}")
    for key, seconds in best.items():
        row(f"  {key}", f"{seconds * 1000:.0f} ms")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step({})
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    generated = [e for e in events if e.key.startswith("graph_")]
    fused = sum(e.self_cpu_time_total for e in generated)
    row("  matrix products (mm, addmm, bmm)", f"{matmul / total:.0%}", "of the profiled step time")
    row("  kernels inductor generated", f"{fused / total:.0%}")
    row("  everything else (AdamW, clipping, ...)", f"{1 - (matmul + fused) / total:.0%}")
    for e in sorted(generated, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]:
        row(f"    {e.key[:40]}", f"{e.self_cpu_time_total / 3 / 1000:.0f} ms", "per step")


def step_matmuls(shape: dict) -> list[tuple[str, int, tuple]]:
    """The matrix products of one GPT-2 training step of `shape` (forward and backward): (name, count per step,
    (batch, m, k, n, a transposed, b transposed)), as autograd runs them: y = x @ w gives dx = dy @ w^T and
    dw = x^T @ dy."""
    tokens, d, v = shape["micro"] * shape["block"], shape["width"], shape["vocab"]
    heads, block = shape["heads"], shape["block"]
    bh, hd = shape["micro"] * heads, d // heads
    layers = shape["layers"]
    out = []
    for name, k, n in (("qkv projection", d, 3 * d), ("attention output", d, d), ("MLP up", d, 4 * d),
                       ("MLP down", 4 * d, d)):
        out += [(f"{name} forward", layers, (1, tokens, k, n, False, False)),
                (f"{name} input grad", layers, (1, tokens, n, k, False, True)),
                (f"{name} weight grad", layers, (1, k, tokens, n, True, False))]
    out += [("LM head forward", 1, (1, tokens, d, v, False, True)),
            ("LM head input grad", 1, (1, tokens, v, d, False, False)),
            ("LM head weight grad", 1, (1, v, tokens, d, True, False))]
    # Attention scores and values (per head): three products each way, the forward and two gradients.
    out += [("attention scores (fwd + 2 grads)", 3 * layers, (bh, block, hd, block, False, True)),
            ("attention values (fwd + 2 grads)", 3 * layers, (bh, block, block, hd, False, False))]
    return out


def bench_gemm_ceiling(name: str, repeats: int = 5) -> None:
    """The highest MFU a training step of the shape could reach if it did nothing but its own matrix products:
    each product timed alone at its real shape and layout (best of `repeats`), in fp32 and in bf16, their FLOPs
    over their summed time, against the n^3 GEMM peak of the same precision."""
    import torch

    shape = SHAPES[name]
    products = step_matmuls(shape)
    ceilings = {}
    print(f"\nmatrix products of one training step, {name} shape ({shape['micro']} x {shape['block']} tokens), "
          f"each alone, best of {repeats}")
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = gemm_peak(dtype_name)
        flops = seconds = 0.0
        worst = []
        for label, count, (batch, m, k, n, ta, tb) in products:
            a = torch.randn(batch, k, m) if ta else torch.randn(batch, m, k)
            b = torch.randn(batch, n, k) if tb else torch.randn(batch, k, n)
            a, b = a.to(dtype), b.to(dtype)
            a, b = (a.transpose(1, 2) if ta else a), (b.transpose(1, 2) if tb else b)
            torch.bmm(a, b)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.bmm(a, b)
                best = min(best, time.perf_counter() - start)
            work = 2.0 * batch * m * k * n
            flops += count * work
            seconds += count * best
            worst.append((work / best / peak, label))
        row(f"  {dtype_name}: the step's products together", f"{flops / seconds / peak:.2f} of the peak",
            f"{flops / seconds / 1e9:,.0f} GFLOP/s against {peak / 1e9:,.0f} (2048^3); "
            f"{seconds * 1000:.0f} ms per step in products alone")
        for share, label in sorted(worst)[:3]:
            row(f"    slowest: {label}", f"{share:.2f} of the peak")
        ceilings[dtype_name] = (flops, seconds, peak)
    # Two parts of every step that are not matrix products and that no trainer can skip: the optimizer step
    # (fused AdamW after clipping, on the fp32 weights, as llmctl runs it) and the loss over the logits, which
    # transformers computes on logits cast to fp32, compiled as in llmctl's compiled step (one fused kernel each
    # way; eager it takes several times longer).
    model, optimizer, _, _ = bare_step_parts(shape)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    targets = torch.randint(0, shape["vocab"], (shape["micro"] * shape["block"],))
    loss_fn = torch.compile(lambda logits: torch.nn.functional.cross_entropy(logits.float(), targets))

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def loss_step(logits):
        loss_fn(logits).backward()

    parts = {"optimizer (clip + fused AdamW)": optimizer_step}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        logits = torch.randn(len(targets), shape["vocab"]).to(dtype).requires_grad_()
        parts[f"loss on {dtype_name} logits, compiled"] = functools.partial(loss_step, logits)
    timed = {}
    for label, fn in parts.items():
        fn()
        timed[label] = min(_timed(fn) for _ in range(repeats))
        row(f"  {label}", f"{timed[label] * 1000:.0f} ms", "per step")
    for dtype_name, (flops, seconds, peak) in ceilings.items():
        rest = timed["optimizer (clip + fused AdamW)"] + timed[f"loss on {dtype_name} logits, compiled"]
        row(f"  {dtype_name}: MFU if the step were only these", f"{flops / (seconds + rest) / peak:.2f}",
            f"{(seconds + rest) * 1000:.0f} ms per step; every other operation (GELU, norms, softmax, "
            "embeddings) would have to cost nothing")


def bench_allocator(name: str, rounds: int = 2) -> None:
    """llmctl pretrain with freed memory kept in the process (llmctl/allocator.py) and with glibc's default
    malloc (LLMCTL_KEEP_FREED_MEMORY=0), fp32 and bf16, eager: steady tokens/s (the best of `rounds`,
    alternating) and the peak RSS of the run's process."""
    from bench import measure

    from llmctl.allocator import OFF_SWITCH

    shape = SHAPES[name]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / name
        _run([sys.executable, "-m", "llmctl", "preprocess", "recipes/gpt-small.toml", "-o", str(run), *_sets(shape)],
             ENV)
        got: dict[tuple[str, str], dict] = {}
        for _ in range(rounds):
            for precision in ("fp32", "bf16"):
                for mode in ("glibc default", "kept"):
                    env = {**ENV, OFF_SWITCH: "0" if mode == "glibc default" else "1"}
                    done = measure([sys.executable, "-m", "llmctl", "pretrain", "recipes/gpt-small.toml", "-o",
                                    str(run), "--overwrite", *_sets(shape), "--set", f'train.precision="{precision}"',
                                    "--set", "train.compile=false"], env)
                    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
                    rate = statistics.mean([r["tokens_per_sec"] for r in log if r.get("tokens_per_sec")][1:])
                    best = got.setdefault((precision, mode), {"rate": 0.0, "rss": 0})
                    best["rate"], best["rss"] = max(best["rate"], rate), max(best["rss"], done["rss"])
    print(f"\npretrain {name}, eager, freed memory kept in the process or returned (glibc's defaults)")
    for precision in ("fp32", "bf16"):
        base, kept = got[(precision, "glibc default")], got[(precision, "kept")]
        row(f"  {precision}, glibc default", f"{base['rate']:,.0f} tok/s", f"peak RSS {base['rss']:,} MiB")
        row(f"  {precision}, kept", f"{kept['rate']:,.0f} tok/s",
            f"{kept['rate'] / base['rate']:.2f}x; peak RSS {kept['rss']:,} MiB ({kept['rss'] / base['rss']:.2f}x)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="llmctl pretrain against transformers' Trainer, in one run")
    ap.add_argument("shapes", nargs="*", metavar="SHAPE", help=f"any of {', '.join(SHAPES)} (default: all)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (default: each shape's)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds; each figure is the best of them")
    ap.add_argument("--variants", action="store_true",
                    help="only the training-step variants (fp32/bf16 x eager/compiled) in one process")
    ap.add_argument("--gemm-ceiling", action="store_true",
                    help="only the MFU the step's matrix products alone would reach, fp32 and bf16")
    ap.add_argument("--allocator", action="store_true",
                    help="only llmctl pretrain with freed memory kept against glibc's default malloc")
    ap.add_argument("--profile", action="store_true",
                    help="only where a compiled bf16 training step spends its time (bare loop, torch profiler)")
    args = ap.parse_args()
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    print(f"llmctl pretrain vs peers on {os.cpu_count()} CPU threads ({time.strftime('%Y-%m-%d %H:%M')})")
    if args.variants:
        for shape_name in args.shapes or list(SHAPES):
            bench_step_variants(shape_name)
    elif args.gemm_ceiling:
        for shape_name in args.shapes or list(SHAPES):
            bench_gemm_ceiling(shape_name)
    elif args.allocator:
        for shape_name in args.shapes or list(SHAPES):
            bench_allocator(shape_name)
    elif args.profile:
        for shape_name in args.shapes or list(SHAPES):
            bench_step_profile(shape_name)
    else:
        bench_pretrain_vs_peers(args.shapes or None, args.steps, args.repeats)
