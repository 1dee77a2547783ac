"""Fine-tuning tokens/s with length-grouped batches or packed rows against random-order padding, one run, one
machine, same recipe, data, seed and steps; and the validation metrics each way (issue 9, part 4).

    python tests/bench_finetune.py                    # every case, full recipes (about 15 minutes on 2 cores)
    python tests/bench_finetune.py classification --steps 60

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
from pathlib import Path

from bench import row

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

# A decoder-only model for summarization from scratch, so that packing has something to pack.
GPT = ['model.arch="gpt2"', "model.config={n_layer=3, n_embd=128, n_head=4, n_positions=256, "
       "resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0}", "train.lr=1e-3"]

# name -> (recipe, extra --set values, [(variant label, --set values)]); the first variant is the baseline.
RANDOM = ["train.group_by_length=false", "train.packing=false"]
CASES = {
    "classification": ("classification", [], [("random order, padded", RANDOM),
                                              ("grouped by length", ["train.group_by_length=true"])]),
    "summarization": ("summarization", [], [("random order, padded", RANDOM),
                                            ("grouped by length", ["train.group_by_length=true"])]),
    "summarization-causal": ("summarization", GPT, [("random order, padded", RANDOM),
                                                    ("grouped by length", ["train.group_by_length=true",
                                                                           "train.packing=false"]),
                                                    ("packed rows", ["train.packing=true"])]),
}


def finetune(recipe: str, out: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "llmctl", "finetune", recipe, "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((out / "results.json").read_text())


def bench_case(name: str, tmp: Path, steps: int | None = None) -> list[float]:
    recipe, extra, variants = CASES[name]
    if steps:
        extra = [*extra, f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}"]
    base = None
    ratios = []
    for label, sets in variants:
        res = finetune(recipe, tmp / f"{name}-{len(ratios)}", [*extra, *sets])
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


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (default: each recipe's own)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases or list(CASES):
            bench_case(name, Path(tmp), args.steps)


if __name__ == "__main__":
    main()
