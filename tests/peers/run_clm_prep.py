"""The `run_clm` way of preprocessing a corpus: the peer of llmctl's preprocessing in tests/bench_prep.py.

What the Hugging Face `run_clm.py` example does to its data before training, and nothing more: load the text with
`datasets` (`load_dataset("text")`, here one document per paragraph, as llmctl reads .txt files), tokenize with
`Dataset.map(batched=True)` calling the fast tokenizer, then `group_texts` in a second `map`: each map batch's
token lists are concatenated and cut into blocks of `--block-size`, the batch's remainder dropped. Defaults are the
example's: one process (`--num-proc`, its `preprocessing_num_workers`), map batches of 1,000, Arrow cache files
written by every map (into a fresh cache directory, so nothing is reused from an earlier run).

One change, so that the blocks can be compared with llmctl's token for token: the tokenizer's post-processor
appends EOS to every document (llmctl separates documents with EOS; the example's GPT-2 tokenizer adds nothing).

    python tests/peers/run_clm_prep.py --tokenizer RUN/tokenizer --train train.txt --validation val.txt \\
        --block-size 128 --out DIR [--num-proc N]

Prints one JSON line: tokens (every token tokenized, EOS included), blocks, seconds and tokens_per_sec. The clock
runs from before `datasets` and `transformers` are imported to the blocks saved: what `seconds` in llmctl's
data/meta.json covers too (`llmctl preprocess` imports both inside its clock); the interpreter's start-up and
argument parsing are outside both. The blocks are saved with `save_to_disk` in DIR/train and DIR/validation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from itertools import chain
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a saved fast tokenizer (a directory)")
    ap.add_argument("--train", required=True, help="training text, documents separated by blank lines")
    ap.add_argument("--validation", required=True, help="validation text, the same layout")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--num-proc", type=int, default=None, help="map worker processes (run_clm's default: none)")
    ap.add_argument("--out", required=True, help="directory for the blocks (train/, validation/)")
    args = ap.parse_args()
    block_size = args.block_size

    started = time.perf_counter()
    import datasets
    from tokenizers import processors
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    cache = tempfile.mkdtemp(prefix="run-clm-cache-")
    raw = datasets.load_dataset("text", data_files={"train": args.train, "validation": args.validation},
                                sample_by="paragraph", cache_dir=cache)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    eos = tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_token_id)])

    def tokenize_function(batch):
        return tokenizer(batch["text"])

    tokenized = raw.map(tokenize_function, batched=True, num_proc=args.num_proc, remove_columns=["text"],
                        desc="tokenize")

    def group_texts(batch):
        joined = {name: list(chain.from_iterable(batch[name])) for name in batch}
        usable = len(joined["input_ids"]) // block_size * block_size
        out = {name: [seq[i : i + block_size] for i in range(0, usable, block_size)] for name, seq in joined.items()}
        out["labels"] = list(out["input_ids"])
        return out

    blocks = tokenized.map(group_texts, batched=True, num_proc=args.num_proc, desc=f"group in {block_size}")
    for split in ("train", "validation"):
        blocks[split].save_to_disk(str(Path(args.out) / split))
    seconds = time.perf_counter() - started

    # Counted after the clock stops: the tokens the map produced (grouping drops each batch's remainder).
    tokens = 0
    for split in ("train", "validation"):
        for table in tokenized[split].with_format("arrow").iter(batch_size=10_000):
            tokens += len(table.column("input_ids").combine_chunks().flatten())
    print(json.dumps({"tokens": tokens, "blocks": sum(len(blocks[s]) for s in ("train", "validation")),
                      "seconds": round(seconds, 3), "tokens_per_sec": round(tokens / seconds, 1)}))
    del raw, tokenized, blocks
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
