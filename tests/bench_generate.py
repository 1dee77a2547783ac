"""Batched generation against plain `model.generate`, measured side by side in one process (issue 9, part 5;
printed, never asserted).

    python tests/bench_generate.py                   # trains the summarizer first: about 2-3 minutes on 2 CPU cores
    python tests/bench_generate.py --run RUN_DIR     # reuse a finished `llmctl finetune` summarization run
    python tests/bench_generate.py --rounds 2 --limit 96 --threads 1
    python tests/bench_generate.py --run runs/summarization --causal runs/gpt-small/final   # models you have

The peer (tests/peers/generate_peer.py) is what the transformers docs show: the inputs in their given order, batches
of `--batch-size`, the tokenizer's padding (left for a decoder-only model), one greedy `model.generate` per batch,
fp32. llmctl is `llmctl.generation.generate` with the same model object, inputs, batch size, max_new_tokens and
greedy settings:
  * as it runs by default (fp32: length-sorted batches, which take more rows where the inputs are short, up to
    the tokens of batch-size rows at the longest input allowed and 2x the rows; its greedy loop, which drops
    finished rows and writes a decoder-only model's KV cache into reserved room instead of concatenating);
  * the same with batches of exactly batch-size rows (what growing the batches adds);
  * plain `model.generate` on llmctl's batches (what the sorting and growing alone buy);
  * `precision = "bf16"` (bfloat16 autocast; "auto" picks it only on hardware with native bf16).

Two models:
  * summarization T5: the shipped recipe (recipes/summarization.toml: 3+3 layers, d_model 128) trained for 150
    steps (about a minute), so that its summaries have realistic lengths and end with EOS; its validation
    documents (the embedded data) are the inputs and its ROUGE is computed against their reference summaries;
  * causal GPT-2: the gpt-small shape (4 layers, 192 wide) built from a config with random weights and the same
    tokenizer, prompted with "DOCUMENT\\nSummary:" as the summarization task prompts a causal LM. Untrained, it
    never emits EOS, so every row runs to max_new_tokens: the case where dropping finished rows cannot help.

llmctl keeps freed memory in the process on the CPU (llmctl/allocator.py), a setting of the whole process; it is
made before the first round here, so the peer runs with it as well and the ratios leave out what it buys.

Each variant runs `--rounds` times, interleaved with the others so that the load of a shared machine falls on all
alike; each figure is the best round. Outputs/s counts documents; new tokens/s counts the peer's generated tokens
(EOS included), which are llmctl's too wherever its outputs are identical.

tests/bench.py can call `bench_generate_vs_peer()`; `main(argv)` is the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
VALIDATION = ROOT / "data" / "summarization" / "validation.jsonl"
TRAIN_SETS = ("train.max_steps=150", "train.warmup_steps=20", "train.eval_every=1000", "train.checkpoint_every=1000",
              "train.log_every=50")
MAX_SOURCE_LENGTH = 192  # recipes/summarization.toml: data.max_source_length
GPT_SHAPE = dict(n_layer=4, n_head=4, n_embd=192, n_positions=256)  # recipes/gpt-small.toml



def train_summarizer(out: Path) -> Path:
    """`llmctl finetune recipes/summarization.toml`, 150 steps; returns the run directory."""
    sets = [a for s in TRAIN_SETS for a in ("--set", s)]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmctl", "finetune", "recipes/summarization.toml", "-o", str(out),
                           *sets], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"llmctl finetune failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"trained the summarizer in {time.perf_counter() - start:.0f} s: {out}", flush=True)
    return out


def load_models(run: Path, causal: Path | None = None):
    """(name, model, tokenizer directory, inputs, references, max_new_tokens) for the trained T5 and a GPT-2:
    `causal` (a saved decoder-only model with its tokenizer), else the untrained one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    records = [json.loads(line) for line in VALIDATION.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = [r["document"] for r in records]
    refs = [r["summary"] for r in records]
    results = json.loads((run / "results.json").read_text())
    max_new = int(results["max_new_tokens"])
    t5 = AutoModelForSeq2SeqLM.from_pretrained(run / "final").eval()
    tok = AutoTokenizer.from_pretrained(run / "final")
    eos = tok.eos_token_id
    config = GPT2Config(vocab_size=len(tok), bos_token_id=eos, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **GPT_SHAPE)
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(config).eval()
    prompts = [d + "\nSummary:" for d in docs]
    second = ("causal GPT-2, untrained", gpt, run / "final", prompts, None, max_new)
    if causal is not None:
        second = (f"causal {causal}", AutoModelForCausalLM.from_pretrained(causal).eval(), causal, prompts, None,
                  max_new)
    return [("summarization T5, trained", t5, run / "final", docs, refs, max_new), second]


def bench_model(name, model, tokenizer_dir, inputs, refs, max_new, *, batch_size, rounds) -> dict:
    from transformers import AutoTokenizer

    from generate_peer import peer_generate
    from llmctl import generation as G
    from llmctl.tasks.base import compute_metrics

    peer_tok = AutoTokenizer.from_pretrained(tokenizer_dir)  # the peer sets its padding side on its own copy
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = G.GenerationSettings(max_new_tokens=max_new, batch_size=batch_size,
                                    max_source_length=MAX_SOURCE_LENGTH)
    # The same inputs on both sides: the peer truncates to the length llmctl does (a causal LM's context less
    # max_new_tokens, where that is shorter than MAX_SOURCE_LENGTH).
    source_limit = G.source_limit(model, tok, settings, encoder_decoder=model.config.is_encoder_decoder)
    bf16 = G.GenerationSettings(max_new_tokens=max_new, batch_size=batch_size, max_source_length=MAX_SOURCE_LENGTH,
                                precision="bf16")
    peer_tokens: list[list[int]] = []

    def peer():
        outputs, tokens = peer_generate(model, peer_tok, inputs, batch_size=batch_size, max_new_tokens=max_new,
                                        max_length=source_limit)
        peer_tokens[:] = tokens
        return outputs

    def sorted_plain():
        applies = G._greedy_loop_applies
        G._greedy_loop_applies = lambda model, settings: False
        try:
            return G.generate(model, tok, inputs, settings).outputs
        finally:
            G._greedy_loop_applies = applies

    def fixed_rows():
        growth = G.MAX_BATCH_GROWTH
        G.MAX_BATCH_GROWTH = 1
        try:
            return G.generate(model, tok, inputs, settings).outputs
        finally:
            G.MAX_BATCH_GROWTH = growth

    variants = {
        "peer: plain batched generate": peer,
        "llmctl batches (sorted, grown) + plain generate": sorted_plain,
        "llmctl, batches of exactly batch-size rows": fixed_rows,
        "llmctl (default: fp32)": lambda: G.generate(model, tok, inputs, settings).outputs,
        "llmctl, precision bf16": lambda: G.generate(model, tok, inputs, bf16).outputs,
    }
    # Warm-up, so that first-call costs (lazy imports, kernel selection) fall on neither side's figures.
    peer_generate(model, peer_tok, inputs[:batch_size], batch_size=batch_size, max_new_tokens=max_new,
                  max_length=source_limit)
    G.generate(model, tok, inputs[:batch_size], settings)
    G.generate(model, tok, inputs[:batch_size], bf16)
    best = {key: float("inf") for key in variants}
    outputs = {}
    for _ in range(rounds):
        for key, fn in variants.items():
            start = time.perf_counter()
            outputs[key] = fn()
            best[key] = min(best[key], time.perf_counter() - start)

    n = len(inputs)
    new_tokens = sum(len(t) for t in peer_tokens)
    capped = sum(1 for t in peer_tokens if len(t) == max_new and t[-1] != tok.eos_token_id)
    peer_key = "peer: plain batched generate"
    print(f"\n{name}: {n} validation inputs, batch {batch_size}, greedy, max_new_tokens {max_new}, "
          f"{new_tokens:,} new tokens ({new_tokens / n:.1f} per output, {capped} capped), "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    for key, seconds in best.items():
        same = sum(a == b for a, b in zip(outputs[peer_key], outputs[key]))
        note = f"{seconds:.2f} s"
        if key != peer_key:
            note += f"; {best[peer_key] / seconds:.2f}x the peer; identical outputs {same}/{n} ({same / n:.0%})"
        if same == n:
            note += f"; {new_tokens / seconds:,.0f} new tokens/s"
        row(f"  {key}", f"{n / seconds:,.1f} out/s", note)
    if refs is not None:
        rouge = {key: compute_metrics(["rouge"], outputs[key], refs[:n], {})["rouge.rougeL"]
                 for key in (peer_key, "llmctl (default: fp32)", "llmctl, precision bf16")}
        for key, value in rouge.items():
            delta = "" if key == peer_key else f"delta {value - rouge[peer_key]:+.4f} against the peer"
            row(f"  ROUGE-L, {key}", f"{value:.4f}", delta)
    return {key: n / s for key, s in best.items()}


def bench_generate_vs_peer(run: Path | None = None, *, causal: Path | None = None, rounds: int = 3, limit: int = 0,
                           batch_size: int = 32, threads: int | None = None) -> None:
    """The whole benchmark: train the summarizer unless `run` is given, then both models against the peer."""
    import torch

    from llmctl.allocator import keep_freed_memory
    from llmctl.generation import resolve_precision

    keep_freed_memory()  # for the peer too, from the first round (see the module docstring)
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = run or train_summarizer(Path(tmp) / "summarization")
        models = load_models(run, causal)
        label, _ = resolve_precision(models[0][1], "auto")
        print(f"generation vs plain generate on {torch.get_num_threads()} torch threads "
              f"({os.cpu_count()} CPUs; precision \"auto\" here: {label}), best of {rounds} interleaved rounds")
        for name, model, tok_dir, inputs, refs, max_new in models:
            inputs = inputs[:limit] if limit else inputs
            bench_model(name, model, tok_dir, inputs, refs, max_new, batch_size=batch_size, rounds=rounds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="llmctl.generation against plain batched model.generate")
    ap.add_argument("--run", type=Path, help="a finished summarization run (llmctl finetune) to reuse")
    ap.add_argument("--causal", type=Path, help="a saved decoder-only model (with its tokenizer) instead of the "
                                                "untrained GPT-2, e.g. runs/gpt-small/final")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure is the best")
    ap.add_argument("--limit", type=int, default=0, help="the first N validation documents only (0 = all 200)")
    ap.add_argument("--batch-size", type=int, default=32, help="both sides (the recipe's generation.batch_size)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    bench_generate_vs_peer(args.run, causal=args.causal, rounds=args.rounds, limit=args.limit,
                           batch_size=args.batch_size, threads=args.threads)


if __name__ == "__main__":
    main()
