"""Text-to-text tasks (summarization, translation) for both generating families.

Encoder-decoder models read `source_prefix + source` and are trained on the target as labels. Causal LMs read
a prompt built around the source and continue it with the target; the loss covers the target (and its EOS)
only, never the prompt. The same features serve training and the validation loss, so both cut targets alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmctl.tasks.base import Predictions, Spec, Task, compute_metrics, request_text


def split_prompt(prompt: str) -> tuple[str, str]:
    before, sep, after = prompt.partition("{source}")
    if not sep:
        from llmctl.data import DataError

        raise DataError(f"data.prompt must contain {{source}}, got {prompt!r}")
    return before, after


def fit_source(tokenizer, source: str, budget: int) -> str:
    """Cut `source` to at most `budget` tokens (keeping its beginning) and return it as text."""
    ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return source
    return tokenizer.decode(ids[: max(budget, 1)], skip_special_tokens=True)


def model_inputs(examples: list[dict], tokenizer, spec: Spec) -> list[str]:
    """The text each example is given to the model as, for training and for generation alike."""
    if spec.family == "seq2seq":
        return [spec.source_prefix + ex["source"] for ex in examples]
    before, after = split_prompt(spec.prompt or "{source}")
    overhead = len(tokenizer(before + after, add_special_tokens=False)["input_ids"])
    budget = max(1, spec.max_source_length - overhead)
    return [before + fit_source(tokenizer, ex["source"], budget) + after for ex in examples]


def _with_eos(ids: list[int], eos_id: int, limit: int) -> list[int]:
    if not ids or ids[-1] != eos_id:
        ids = ids[: limit - 1] + [eos_id]
    return ids


def target_lengths(examples: list[dict], tokenizer, family: str) -> list[int]:
    """Token lengths of the reference targets as the model must produce them (EOS included)."""
    if family == "seq2seq":
        return [len(tokenizer(text_target=ex["target"])["input_ids"]) + 1 for ex in examples]
    return [len(tokenizer(" " + ex["target"], add_special_tokens=False)["input_ids"]) + 1 for ex in examples]


def source_budget(max_source_length: int, family: str, context: int | None, max_new: int) -> int:
    """Tokens the model input may take: the recipe's limit, and for causal LMs the room left for the output."""
    if family == "causal" and context is not None:
        if context - max_new < 8:
            from llmctl.data import DataError

            raise DataError(f"the model's context ({context} tokens) leaves no room for a prompt before "
                            f"{max_new} generated tokens; lower generation.max_new_tokens")
        return min(max_source_length, context - max_new)
    return max_source_length


@dataclass(kw_only=True)
class TextToText(Task):
    families: tuple[str, ...] = ("seq2seq", "causal")
    auto_classes: dict = field(default_factory=lambda: {"seq2seq": "AutoModelForSeq2SeqLM",
                                                        "causal": "AutoModelForCausalLM"})
    peft_types: dict = field(default_factory=lambda: {"seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"})
    generates: bool = True
    default_prompt: str = "{source}"
    # The field of `llmctl serve`'s answer that holds the output ({"summary", "capped"}).
    output_field: str = "output"

    def tokenizer_texts(self, examples):
        for ex in examples:
            yield ex["source"]
            yield ex["target"]

    def spec(self, recipe, tokenizer, train, family, context, say) -> Spec:
        from llmctl.generation import derive_max_new_tokens

        d = recipe.data
        lengths = target_lengths(train, tokenizer, family)
        ceiling = d.max_target_length + 1
        if family == "causal" and context is not None:
            ceiling = min(ceiling, context // 2)  # a decoder-only model shares its context with the prompt
        max_new = recipe.generation.max_new_tokens or derive_max_new_tokens(lengths, ceiling=ceiling)
        if max_new < max(lengths):
            why = (f"the model's context is {context}" if context is not None and ceiling == context // 2
                   else f"data.max_target_length is {d.max_target_length}")
            say(f"[yellow]warning:[/] the longest training target has {max(lengths)} tokens; generation stops "
                f"at {max_new} ({why})")
        budget = source_budget(d.max_source_length, family, context, max_new)
        max_target = d.max_target_length if context is None else min(d.max_target_length, max(1, context - budget))
        return Spec(task=self.name, family=family, context=context, max_source_length=budget,
                    max_target_length=max_target, prompt=d.prompt or self.default_prompt,
                    source_prefix=d.source_prefix, max_new_tokens=max_new)

    def spec_from_info(self, info, config, family, context) -> Spec:
        import math

        new = info.get("max_new_tokens") or getattr(config, "max_new_tokens", None) or 64
        source = info.get("max_source_length") or (context - new if context else 512)
        return Spec.from_info(info, task=self.name, family=family, context=context, max_source_length=source,
                              max_new_tokens=new, prompt=self.default_prompt,
                              max_target_length=math.ceil(new / 1.1))

    def features(self, examples, where, tokenizer, spec):
        eos = tokenizer.eos_token_id
        inputs = model_inputs(examples, tokenizer, spec)
        limit = spec.max_target_length
        cut = 0
        out = []
        for ex, text in zip(examples, inputs):
            if spec.family == "seq2seq":
                src = tokenizer(text, truncation=True, max_length=spec.max_source_length)["input_ids"]
                src = _with_eos(src, eos, spec.max_source_length)
                full = tokenizer(text_target=ex["target"])["input_ids"]
                cut += len(_with_eos(full, eos, 10**9)) > limit
                out.append({"input_ids": src, "labels": _with_eos(full[:limit], eos, limit)})
            else:
                prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
                full = tokenizer(" " + ex["target"], add_special_tokens=False)["input_ids"] + [eos]
                cut += len(full) > limit
                row = {"input_ids": prompt + full[:limit], "labels": [-100] * len(prompt) + full[:limit]}
                if spec.context is not None:
                    row = {k: v[: spec.context] for k, v in row.items()}
                out.append(row)
        return out, cut

    def collator(self, pad_id: int):
        """Right-pad input_ids (pad_id) and labels (-100); the attention mask marks the real tokens."""
        from llmctl.tasks.batching import pad, pad_inputs

        def collate(rows: list[dict]) -> dict:
            batch = pad_inputs(rows, pad_id)
            batch["labels"] = pad([r["labels"] for r in rows], -100)
            return batch

        return collate

    def packs(self, spec) -> bool:
        return spec.family == "causal"

    def predict(self, model, examples, where, tokenizer, spec, settings, **options) -> Predictions:
        from llmctl.generation import generate

        report = generate(model, tokenizer, model_inputs(examples, tokenizer, spec), settings,
                          seed=options.get("seed", 0), synced_gpus=options.get("synced_gpus", False))
        return Predictions([p.strip() for p in report.outputs], capped=list(report.flags))

    def score(self, names, predictions, examples, where, spec, kwargs):
        return compute_metrics(names, list(predictions), [ex["target"] for ex in examples], kwargs)

    def row(self, example, prediction, spec):
        return {"source": example["source"], "prediction": prediction, "reference": example["target"]}

    def serve_request(self, body, inputs):
        """`{"text", "max_new_tokens"?}`: the text (fit to the input limit); requests asking for the same number
        of new tokens share a batch."""
        text = request_text(body, "text")
        new = inputs.new_tokens(body.get("max_new_tokens"), "max_new_tokens")
        return (new,), inputs.fit(text, "text")

    def serve_batch(self, model, key, items, tokenizer, spec, settings):
        """`{output_field: text, "capped": bool}` per text, generated as `summarize` does."""
        from dataclasses import replace

        from llmctl.generation import generate

        (new_tokens,) = key
        settings = replace(settings, max_new_tokens=new_tokens, batch_size=max(len(items), 1))
        spec = replace(spec, max_new_tokens=new_tokens)
        report = generate(model, tokenizer, model_inputs([{"source": t.strip()} for t in items], tokenizer, spec),
                          settings)
        return [{self.output_field: out, "capped": flag} for out, flag in zip(report.outputs, report.flags)]
