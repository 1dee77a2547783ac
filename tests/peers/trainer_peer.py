"""The peer `make bench` compares `llmctl pretrain` with: transformers' `Trainer` on the same GPT-2 shape and the
same packed blocks (an llmctl run directory made by `llmctl preprocess`), printing its steady tokens/s.

    python tests/peers/trainer_peer.py RUN_DIR --layers 6 --width 384 --heads 6 --batch-size 8 \
        --micro-batch-size 8 --steps 30 --mode default      # or --mode best: bf16=True, torch_compile=True

"default" is Trainer as it comes (fp32, its default optimizer, which is fused AdamW); "best" adds bf16 autocast and
torch.compile, the best settings on a CPU with native bf16. Tokens/s is measured from the end of step `--skip`
(default 3: the compile happens in the first step) to the last step, the same steady window llmctl's log gives.
The last line printed is one JSON object: {"mode", "tokens_per_sec", "steps_timed", "seconds", "final_loss"}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an llmctl run directory with data/train and tokenizer/")
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True, help="sequences per optimizer step")
    ap.add_argument("--micro-batch-size", type=int, required=True, help="sequences per forward/backward pass")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3, help="steps left out of the timing (compile, warm-up)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--mode", choices=("default", "best"), default="default")
    args = ap.parse_args()

    import datasets
    import torch
    from transformers import (AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast, Trainer, TrainerCallback,
                              TrainingArguments)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(args.run / "tokenizer"))
    train = datasets.load_from_disk(str(args.run / "data" / "train"))
    block = len(train[0]["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = AutoConfig.for_model(
        "gpt2", n_layer=args.layers, n_head=args.heads, n_embd=args.width, n_positions=block,
        vocab_size=len(tokenizer), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad,
    )
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config)

    def collate(rows):
        ids = [r["input_ids"] for r in rows]
        longest = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}

    class Clock(TrainerCallback):
        def __init__(self):
            self.start = None
            self.end = None
            self.loss = None

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.skip:
                self.start = time.perf_counter()
            if state.global_step == args.steps:
                self.end = time.perf_counter()

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

    clock = Clock()
    best = args.mode == "best"
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=args.batch_size // args.micro_batch_size, max_steps=args.steps,
            learning_rate=args.lr, warmup_steps=0, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0,
            seed=args.seed, logging_steps=args.steps, save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True, bf16=best, torch_compile=best,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate, callbacks=[clock])
        trainer.train()
    timed = args.steps - args.skip
    seconds = clock.end - clock.start
    print(json.dumps({"mode": args.mode, "tokens_per_sec": round(timed * args.batch_size * block / seconds, 1),
                      "steps_timed": timed, "seconds": round(seconds, 2), "final_loss": clock.loss,
                      "threads": torch.get_num_threads(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
