"""`llmctl pretrain`: set up -> fit -> validate -> export. Plain functions, explicit arguments."""

from __future__ import annotations

import time
from pathlib import Path

from llmctl import data, modeling, runs


def _model_config(recipe, tokenizer):
    return modeling.causal_lm_config(
        recipe.model.arch,
        dict(recipe.model.config),
        vocab_size=len(tokenizer),
        block_size=recipe.data.block_size,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )


def plan(recipe, root: Path, *, num_processes: int = 1) -> dict:
    """What a run would do, without doing it: for --dry-run."""
    from transformers import AutoConfig

    t, d = recipe.train, recipe.data
    check_block_size(recipe)
    source = data.tokenizer_source(recipe)
    tok_dir = Path(root) / "tokenizer"
    if recipe.model.path:
        config = _load_config(recipe.model.path, AutoConfig)
        vocab = config.vocab_size
    else:
        if source or tok_dir.is_dir():
            from llmctl import tokenizer as tok_mod

            tok = tok_mod.load(source or str(tok_dir))
            vocab, eos, pad = len(tok), tok.eos_token_id, tok.pad_token_id or tok.eos_token_id
        else:  # the tokenizer is not trained yet: its size is the recipe's (BPE reaches it on any real corpus)
            vocab, eos, pad = recipe.tokenizer.vocab_size, 0, 1
        config = modeling.causal_lm_config(recipe.model.arch, dict(recipe.model.config), vocab_size=vocab,
                                           block_size=d.block_size, eos_id=eos, pad_id=pad)
    params = modeling.meta_parameter_count(config)
    per_chunk = t.micro_batch_size * num_processes
    if t.batch_size % per_chunk:
        from llmctl.train import TrainError

        raise TrainError(f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size x "
                         f"processes ({t.micro_batch_size} x {num_processes} = {per_chunk})")
    run = runs.Run(Path(root))
    return {
        "recipe": recipe.name,
        "train_files": ", ".join(d.train_files) or f"hub dataset {d.hub_dataset}",
        "validation_files": ", ".join(d.validation_files) or
                            f"none: {d.validation_fraction:g} of the training documents held out (seed {recipe.seed})",
        "model": f"{config.model_type} ({'from ' + recipe.model.path if recipe.model.path else 'from scratch'})",
        "parameters": params,
        "vocab_size": vocab,
        "processes": num_processes,
        "gradient_accumulation": t.batch_size // per_chunk,
        "tokens_per_step": t.batch_size * d.block_size,
        "steps": t.max_steps,
        "tokens_total": t.batch_size * d.block_size * t.max_steps,
        "output": {
            "run": str(run.root),
            "recipe": str(run.recipe),
            "data": str(run.data),
            "log": str(run.log),
            "checkpoints": str(run.checkpoints),
            "final": str(run.final),
            "results": str(run.results),
        },
    }


def check_block_size(recipe) -> None:
    """A pretrained model cannot take blocks longer than its context: say so before any work."""
    if not recipe.model.path:
        return
    config = modeling.load_config(recipe.model.path)
    context = modeling.context_length(config)
    if context is not None and recipe.data.block_size > context:
        raise modeling.ModelError(f"data.block_size ({recipe.data.block_size}) is longer than the context of "
                                  f"{recipe.model.path} ({context} tokens); set data.block_size to at most {context}")


def prepare_corpus(recipe, run: runs.Run, console=None):
    """The packed splits and tokenizer a pretraining run trains on, made (or found in the cache) the way the
    recipe says: shards made by `preprocess --shard I/K` jobs (all of 1..K, no unsharded split), a stream of
    documents (`data.streaming`), or the corpus read into Arrow."""
    from llmctl import streaming

    if data.has_shards(run):
        return data.prepared_shards(recipe, run)
    if recipe.data.streaming:
        return streaming.prepare(recipe, run, console)
    return data.prepare(recipe, run, console)


def _load_config(path: str, auto_config):
    try:
        return auto_config.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise modeling.ModelError(modeling.not_found(path, "model config", exc)) from None


def run_pretrain(recipe, run: runs.Run, *, resume: bool, console) -> dict:
    from llmctl import checkpoint
    from llmctl import tokenizer as tok_mod
    from llmctl.evaluation import causal_lm_evaluator
    from llmctl.tasks import causal_lm
    from llmctl.train import fit, make_accelerator

    started = time.perf_counter()
    check_block_size(recipe)
    accelerator, precision = make_accelerator(recipe.train.precision, seed=recipe.seed,
                                              report_to=recipe.train.report_to, run=run)
    main = accelerator.is_main_process
    out = console if main else None
    with accelerator.main_process_first():  # the main process preprocesses; the others find its cache
        prepared = prepare_corpus(recipe, run, out)
    tokenizer = tok_mod.load(str(prepared.tokenizer))

    if recipe.model.path:
        model = modeling.load_causal_lm(recipe.model.path)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise modeling.ModelError(
                f"{recipe.model.path}: the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                f"{model.get_input_embeddings().num_embeddings}"
            )
    else:
        model = modeling.build_causal_lm(_model_config(recipe, tokenizer), recipe.seed)
    n_params = modeling.count_parameters(model)
    if out is not None:
        out.print(
            f"pretrain: {model.config.model_type}, {n_params / 1e6:.2f}M parameters, "
            f"{accelerator.num_processes} process(es) on {accelerator.device.type}, "
            f"precision {precision}, {recipe.train.max_steps} steps of "
            f"{recipe.train.batch_size} x {recipe.data.block_size} tokens"
        )
    share = data.process_share(prepared, accelerator.process_index, accelerator.num_processes)
    if share is None:
        train_ds = data.load_train(prepared)
    else:  # each process reads only its own shards
        import datasets

        train_ds = datasets.concatenate_datasets([data.load_blocks(p) for p in share.shards])
        if out is not None and share.smallest < prepared.meta["train"]["blocks"] // accelerator.num_processes:
            out.print(f"[yellow]note:[/] the {len(prepared.shards)} shards split unevenly over "
                      f"{accelerator.num_processes} processes: each samples {share.smallest:,} blocks per epoch, "
                      "the smallest share")
    val_ds = data.load_blocks(prepared.validation)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = causal_lm.collator(pad_id)
    evaluate = causal_lm_evaluator(accelerator, val_ds, collate, batch_size=recipe.train.micro_batch_size,
                                   max_batches=recipe.train.eval_batches)
    result = fit(
        accelerator=accelerator,
        model=model,
        train_ds=train_ds,
        collate=collate,
        cfg=recipe.train,
        seed=recipe.seed,
        run=run,
        evaluate=evaluate,
        resume=resume,
        console=out,
        own_share=share.smallest if share else None,
        static_shapes=True,  # packed blocks of data.block_size tokens, every micro-batch full
        fingerprint=checkpoint.fingerprint(recipe),
    )
    shards_read = _shards_by_process(share)
    info = {"task": recipe.task, "block_size": recipe.data.block_size}
    modeling.save_model(accelerator, result.model, tokenizer, run.final, info)
    samples = sample(accelerator, accelerator.unwrap_model(result.model), tokenizer, recipe.sample, seed=recipe.seed)
    results = {}
    if main:
        from llmctl import environment

        history = runs.read_log(run.log)
        first_eval = next((r for r in history if r.get("step") == 0 and "val_loss" in r), {})
        meta = prepared.meta
        results = {
            "task": recipe.task,
            "recipe": recipe.name,
            "model": model.config.model_type,
            "parameters": n_params,
            "steps": result.step,
            "world_size": accelerator.num_processes,
            "precision": precision,
            "environment": environment.describe([*recipe.data.train_files, *recipe.data.validation_files]),
            "train_loss": result.train_loss,
            "val_loss": result.eval.get("loss"),
            "val_perplexity": result.eval.get("perplexity"),
            "initial_val_perplexity": first_eval.get("val_perplexity"),
            "unigram_perplexity": meta.get("unigram_perplexity"),
            "uniform_perplexity": meta.get("uniform_perplexity"),
            "tokens_seen": result.tokens_seen,
            "train_seconds": round(result.seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "tokens_per_sec": round(result.tokens_per_sec, 1),
            "step_tokens_per_sec": result.step_tokens_per_sec,
            "samples": samples,
        }
        if result.mfu is not None:
            results["mfu"] = result.mfu
        if result.compile_seconds is not None:
            results["compile_seconds"] = result.compile_seconds
        if shards_read:
            results["shards_by_process"] = shards_read
        if results["unigram_perplexity"] and results["val_perplexity"]:
            results["perplexity_vs_unigram"] = round(results["val_perplexity"] / results["unigram_perplexity"], 4)
        runs.write_json(run.results, results)  # last: its existence marks the run complete
        from llmctl.card import write_card

        write_card(run.root, run.final)
    accelerator.wait_for_everyone()
    return results


def _shards_by_process(share) -> list[list[str]] | None:
    """Which shards each process trained on (None: all read the whole split), on every process."""
    if share is None:
        return None
    from accelerate.utils import gather_object

    return gather_object([[p.parent.name for p in share.shards]])


def sample(accelerator, model, tokenizer, cfg, *, seed: int) -> list[dict]:
    """Continue each prompt of the recipe's [sample] section with the trained model, the prompts shared among
    the processes; every process gets all continuations, in prompt order."""
    import torch

    from llmctl.evaluation import shard_map

    if not cfg.prompts:
        return []
    model.eval()

    def continue_prompts(prompts: list[str]) -> list[str]:
        texts = []
        for prompt in prompts:
            # Seeded per prompt, so a continuation does not depend on which process drew it.
            torch.manual_seed(seed + cfg.prompts.index(prompt))
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**ids, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k or None,
                                     max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            texts.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return texts

    continuations = shard_map(accelerator, list(cfg.prompts), continue_prompts)
    return [{"prompt": p, "continuation": c} for p, c in zip(cfg.prompts, continuations)]
