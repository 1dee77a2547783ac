"""Preprocessing against its peer, the `run_clm` way (tests/peers/run_clm_prep.py), measured side by side in one run.

    python tests/bench_prep.py            # about 3 minutes on 2 CPU cores

`bench_preprocess_vs_peer()` prints rows like tests/bench.py's: tokens/s of `llmctl preprocess` and of the peer on
the same documents, the same trained tokenizer and block size, on this machine, their ratio, and the peak RSS of
both at 1x and 10x the embedded corpus. The two alternate (llmctl first, then the peer first), each cold in a fresh
directory, and each figure is the best of its repetitions: the machine is shared, and the best run is the one
least slowed by others. Figures are printed, never asserted.

What is timed, on both sides: the work inside the process, from before `datasets` and `transformers` are imported
to the blocks on disk (llmctl: `seconds` in data/meta.json, which also covers the unigram statistics it computes;
the peer: the `seconds` it prints), not the interpreter's start-up; the whole command's wall clock is printed
beside it. The documents are given as a training and a validation file (every 20th document held out, the
5% of the demo recipe), so both sides read the same documents in the same order; the peer's blocks are checked
against llmctl's token for token (the peer drops each map batch's remainder, llmctl keeps every token).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import measure

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "tests" / "peers" / "run_clm_prep.py"
BLOCK = 128  # the demo recipe's block size
HOLD_OUT = 20  # every 20th document is validation: 5%


def _write_corpus(tmp: Path, scale: int) -> tuple[Path, Path]:
    from bench import CORPUS

    docs = CORPUS.read_text(encoding="utf-8").strip().split("\n\n") * scale
    train, val = tmp / f"train{scale}.txt", tmp / f"val{scale}.txt"
    # No trailing newline: the peer's paragraph reader keeps it in the last document, llmctl's reader does not.
    train.write_text("\n\n".join(d for i, d in enumerate(docs) if i % HOLD_OUT != HOLD_OUT - 1), encoding="utf-8")
    val.write_text("\n\n".join(d for i, d in enumerate(docs) if i % HOLD_OUT == HOLD_OUT - 1), encoding="utf-8")
    return train, val


def _llmctl(env, tok_dir: Path, train: Path, val: Path, out: Path) -> dict:
    run = measure(
        [sys.executable, "-m", "llmctl", "preprocess", "recipes/gpt-small.toml", "-o", str(out), "--data", str(train),
         "--validation-data", str(val), "--set", f'tokenizer.path="{tok_dir}"'], env)
    meta = json.loads((out / "data" / "meta.json").read_text())
    tokens = meta["train"]["tokens"] + meta["validation"]["tokens"]
    return {**run, "tokens": tokens, "seconds": meta["seconds"], "documents": meta["documents"]}


def _peer(env, tok_dir: Path, train: Path, val: Path, out: Path) -> dict:
    run = measure(
        [sys.executable, str(PEER), "--tokenizer", str(tok_dir), "--train", str(train), "--validation", str(val),
         "--block-size", str(BLOCK), "--out", str(out)], env)
    res = json.loads(run["stdout"].strip().splitlines()[-1])
    return {**run, "tokens": res["tokens"], "seconds": res["seconds"]}


def _flat(split_dir: Path):
    import datasets
    import numpy as np

    ds = datasets.load_from_disk(str(split_dir))
    return np.concatenate([t.column("input_ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                           for t in ds.with_format("arrow").iter(batch_size=10_000)] or [np.empty(0, np.int64)])


def _peer_blocks_match(llmctl_split: Path, peer_split: Path, eos: int, documents: int) -> bool:
    """The peer's blocks are what llmctl's token stream gives when cut the run_clm way: per map batch of 1,000
    documents, into full blocks, each batch's remainder dropped. Found from llmctl's blocks through the EOS that
    ends every document."""
    import numpy as np

    flat = _flat(llmctl_split).astype(np.int64)
    ends = np.flatnonzero(flat == eos) + 1
    if len(ends) != documents:  # an EOS inside a document's text: the batches cannot be found this way
        return False
    bounds = [0, *ends[999::1000].tolist()]
    if bounds[-1] != len(flat):
        bounds.append(len(flat))
    expected = [flat[s : s + (e - s) // BLOCK * BLOCK] for s, e in zip(bounds, bounds[1:])]
    return np.array_equal(np.concatenate(expected), _flat(peer_split).astype(np.int64))


def bench_preprocess_vs_peer(scales: tuple[int, ...] = (1, 10), reps: int = 3) -> None:
    """llmctl preprocess against the run_clm way, tokens/s and peak RSS, at 1x and 10x the embedded corpus."""
    from bench import ENV, llmctl, row

    from transformers import AutoTokenizer

    env = {**ENV, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    # The example sets no TOKENIZERS_PARALLELISM: the Rust tokenizer uses every core inside `tokenizer(batch)`.
    peer_env = {k: v for k, v in env.items() if k != "TOKENIZERS_PARALLELISM"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        llmctl("preprocess", "recipes/gpt-small.toml", "-o", str(tmp / "tok"))  # the demo's trained tokenizer
        tok_dir = tmp / "tok" / "tokenizer"
        eos = AutoTokenizer.from_pretrained(tok_dir).eos_token_id
        runs: dict[int, dict[str, list[dict]]] = {}
        for scale in scales:
            train, val = _write_corpus(tmp, scale)
            runs[scale] = {"llmctl": [], "peer": []}
            for rep in range(reps):
                order = ("llmctl", "peer") if rep % 2 == 0 else ("peer", "llmctl")
                for side in order:
                    out = tmp / f"{side}-{scale}-{rep}"
                    fn = _llmctl if side == "llmctl" else _peer
                    runs[scale][side].append(fn(env if side == "llmctl" else peer_env, tok_dir, train, val, out))
            docs = runs[scale]["llmctl"][0]["documents"]
            same = all(_peer_blocks_match(tmp / f"llmctl-{scale}-0" / "data" / split, tmp / f"peer-{scale}-0" / split,
                                          eos, docs[split]) for split in ("train", "validation"))
            mb = (train.stat().st_size + val.stat().st_size) / 1e6
            best = {side: min(r, key=lambda x: x["seconds"]) for side, r in runs[scale].items()}
            ours, theirs = best["llmctl"], best["peer"]
            assert ours["tokens"] == theirs["tokens"], (ours["tokens"], theirs["tokens"])
            rate = {side: b["tokens"] / b["seconds"] for side, b in best.items()}
            cpu = {side: min(x["cpu"] for x in r) for side, r in runs[scale].items()}
            row(f"preprocess x{scale}, llmctl", f"{rate['llmctl']:,.0f} tokens/s",
                f"{ours['tokens']:,} tokens, {mb:.1f} MB; {ours['seconds']:.2f} s of work (best of {reps}); "
                f"{cpu['llmctl']:.1f} CPU s, workers included")
            row(f"preprocess x{scale}, run_clm way (peer)", f"{rate['peer']:,.0f} tokens/s",
                f"{theirs['seconds']:.2f} s of work; {cpu['peer']:.1f} CPU s; its blocks equal llmctl's: "
                f"{'yes' if same else 'NO'}")
            pairs = [a["seconds"] and b["seconds"] / a["seconds"]
                     for a, b in zip(runs[scale]["llmctl"], runs[scale]["peer"])]
            walls = {side: min(x["wall"] for x in r) for side, r in runs[scale].items()}
            row(f"  llmctl / peer, x{scale}", f"{rate['llmctl'] / rate['peer']:.2f}x",
                f"target >= 1.5x; each pair: {' / '.join(f'{p:.2f}' for p in pairs)}; whole commands (start-up "
                f"too): {walls['llmctl']:.1f} vs {walls['peer']:.1f} s = {walls['peer'] / walls['llmctl']:.2f}x")
        if len(scales) > 1:
            lo, hi = scales[0], scales[-1]
            for side, name in (("llmctl", "llmctl"), ("peer", "run_clm way")):
                peak = {s: max(x["rss"] for x in runs[s][side]) for s in (lo, hi)}
                tree = {s: max(x["tree"] for x in runs[s][side]) for s in (lo, hi)}
                row(f"preprocess peak RSS x{lo} / x{hi}, {name}", f"{peak[lo]:,} / {peak[hi]:,} MiB",
                    f"{peak[hi] / peak[lo]:.2f}x (target <= 1.2x); all its processes together (PSS): "
                    f"{tree[lo]:,} / {tree[hi]:,} MiB = {tree[hi] / tree[lo]:.2f}x")


if __name__ == "__main__":
    print(f"llmctl preprocessing against the run_clm way on {os.cpu_count()} CPU threads ({time.strftime('%Y-%m-%d')})")
    bench_preprocess_vs_peer()
