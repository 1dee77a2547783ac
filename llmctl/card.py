"""The model card: README.md in a model folder, in the Hugging Face model-card format, so the folder can be pushed
to a hub as it is.

YAML front matter (library, pipeline tag, tags, base model, data files, and a `model-index` with the metrics of
results.json), then Markdown: what the model is, how it was trained, its results next to the untrained model
and the trivial baseline, the resolved recipe, the environment (versions, device, data hashes) and how to load
it with transformers alone or use it with llmctl.

The front matter is written by hand (no YAML library): every string is a double-quoted scalar, which YAML reads
the way JSON does, and every number is written with `repr`, so a parser reads back exactly results.json's values.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from llmctl import runs

PIPELINE_TAGS = {
    "causal_lm": "text-generation",
    "summarization": "summarization",
    "translation": "translation",
    "classification": "text-classification",
    "qa": "question-answering",
    "multiple_choice": "multiple-choice",
}

TASK_WORDS = {
    "causal_lm": "causal language model",
    "summarization": "summarization model",
    "translation": "translation model",
    "classification": "text classifier",
    "qa": "extractive question-answering model",
    "multiple_choice": "multiple-choice model",
}

# Suffix of a transformers model class name -> the Auto class that loads it.
_ARCH_SUFFIXES = (
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForMultipleChoice", "AutoModelForMultipleChoice"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
    ("MTModel", "AutoModelForSeq2SeqLM"),
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
)

_PEFT_AUTO = {
    "AutoModelForSequenceClassification": "AutoPeftModelForSequenceClassification",
    "AutoModelForQuestionAnswering": "AutoPeftModelForQuestionAnswering",
    "AutoModelForSeq2SeqLM": "AutoPeftModelForSeq2SeqLM",
    "AutoModelForCausalLM": "AutoPeftModelForCausalLM",
}

CARD_NAME = "README.md"
PLACEHOLDER = "path/to/this/folder"


def write_card(run_dir: Path, model_dir: Path) -> Path:
    """Write `model_dir/README.md` for the finished run in `run_dir`; a folder holding a PEFT adapter
    (adapter_config.json) gets the adapter's card. Returns the card's path."""
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    path = model_dir / CARD_NAME
    runs.write_text(path, render(run_dir, model_dir))
    return path


# ------------------------------------------------------------------------------------------------------- YAML

# Characters a YAML reader refuses or folds even inside a quoted scalar (outside YAML's printable set, or line
# breaks in YAML 1.1: NEL, LS, PS), escaped as \uXXXX.
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def yaml_str(text: str) -> str:
    """A double-quoted YAML scalar: JSON's escaping (a subset of YAML's), plus escapes for what YAML rejects."""
    out = json.dumps(str(text), ensure_ascii=False)
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def yaml_number(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:  # YAML 1.1 readers take 1e-12 for a string; 1.0e-12 is a float to all
        text = f"{mantissa}.0e{exponent}"
    return text


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------- content


def metrics_of(results: dict) -> list[tuple[str, str, float]]:
    """(name, type, value) of the run's final metrics: `metric.key` of results["metrics"] for fine-tuning
    runs, val_perplexity and val_loss for pretraining runs (the name is the key in results.json)."""
    if "metrics" not in results:  # a pretraining run
        out = [("val_perplexity", "perplexity", results.get("val_perplexity")),
               ("val_loss", "loss", results.get("val_loss"))]
        return [(n, t, v) for n, t, v in out if _number(v)]
    return [(name, name.split(".", 1)[0], value) for name, value in (results.get("metrics") or {}).items()
            if _number(value)]


def is_hub_id(path: str) -> bool:
    """A model path that names a hub repository rather than a local directory."""
    if not path or Path(path).exists() or path.startswith(("/", ".", "~", "pkg:")) or "\\" in path:
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", path) is not None


def auto_class(config: dict, task: str) -> str:
    """The transformers Auto class that loads this model: from config.json's architectures, else the task's."""
    for arch in config.get("architectures") or []:
        for suffix, auto in _ARCH_SUFFIXES:
            if arch.endswith(suffix):
                return auto
    family = (config.get("llmctl") or {}).get("family") or "causal"
    known = _task_object(task)
    return (known.auto_classes.get(family) if known is not None else None) or "AutoModel"


def _task_object(name: str):
    from llmctl import tasks as registry

    try:
        return registry.get(name)
    except ValueError:
        return None


def _file_names(files) -> list[str]:
    return [Path(f).name for f in files or []]


def _fence(text: str, lang: str) -> str:
    """A fenced code block that no run of backticks in `text` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e6 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _seconds(value, unit: str = " s") -> str | None:
    return f"{value:,.1f}{unit}" if _number(value) else None


def _md(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _commands() -> set[str]:
    """The llmctl commands the card may mention: `generate` only where this version has it (found by its module,
    not by importing the CLI, which imports this module's importers)."""
    import importlib.util

    names = {"eval", "summarize"}
    try:
        if importlib.util.find_spec("llmctl.generate_cli") is not None:
            names.add("generate")
    except (ImportError, ValueError):
        pass
    return names


# ------------------------------------------------------------------------------------------------------ render


def render(run_dir: Path, model_dir: Path) -> str:
    results = runs.read_json(run_dir / "results.json")
    recipe_path = run_dir / "recipe.toml"
    recipe_text = recipe_path.read_text(encoding="utf-8") if recipe_path.exists() else ""
    try:
        import tomllib

        recipe = tomllib.loads(recipe_text) if recipe_text else {}
    except ValueError:
        recipe = {}
    config_path = model_dir / "config.json" if (model_dir / "config.json").exists() else run_dir / "final" / "config.json"
    config = runs.read_json(config_path) if config_path.exists() else {}
    adapter = (model_dir / "adapter_config.json").exists()
    facts = _facts(results, recipe, config, adapter)
    return _front_matter(facts) + "\n" + _body(facts, results, recipe, recipe_text) + "\n"


def _facts(results: dict, recipe: dict, config: dict, adapter: bool) -> dict:
    task = results.get("task") or recipe.get("task") or "causal_lm"
    model = recipe.get("model") or {}
    data = recipe.get("data") or {}
    base = model.get("path") or ""
    train = list(data.get("train_files") or [])
    validation = list(data.get("validation_files") or [])
    names = list(dict.fromkeys(_file_names(train + validation)))
    if data.get("hub_dataset"):
        names.append(data["hub_dataset"])
    if validation:
        val_name = ", ".join(_file_names(validation))
    elif train:
        val_name = ", ".join(_file_names(train))
    else:
        val_name = data.get("hub_dataset") or "validation"
    held_out = not validation
    return {
        "name": results.get("recipe") or recipe.get("name") or "llmctl-model",
        "task": task,
        "pipeline_tag": PIPELINE_TAGS.get(task, "text-generation"),
        "base": base,
        "hub_base": base if is_hub_id(base) else "",
        "datasets": names,
        "dataset_name": val_name,
        "held_out": held_out,
        "fraction": data.get("validation_fraction"),
        "seed": recipe.get("seed"),
        "train_files": train,
        "validation_files": validation,
        "metrics": metrics_of(results),
        "auto": auto_class(config, task),
        "adapter": adapter,
        "finetuned": "metrics" in results,  # pretraining runs report perplexity instead
        "generates": bool(getattr(_task_object(task), "generates", False)),
        "config": config,
        "lora": recipe.get("lora") or {},
        "arch": model.get("arch") or config.get("model_type") or results.get("model") or "",
    }


def _front_matter(f: dict) -> str:
    lines = ["---", f"library_name: {'peft' if f['adapter'] else 'transformers'}",
             f"pipeline_tag: {yaml_str(f['pipeline_tag'])}", "tags:", f"- {yaml_str('llmctl')}",
             f"- {yaml_str(f['task'])}"]
    if f["adapter"]:
        lines.append(f"- {yaml_str('lora')}")
    if f["hub_base"]:
        lines.append(f"base_model: {yaml_str(f['hub_base'])}")
    if f["datasets"]:
        lines.append("datasets:")
        lines += [f"- {yaml_str(name)}" for name in f["datasets"]]
    if f["metrics"]:
        lines += [
            "model-index:",
            f"- name: {yaml_str(f['name'])}",
            "  results:",
            "  - task:",
            f"      type: {yaml_str(f['pipeline_tag'])}",
            f"      name: {yaml_str(f['task'])}",
            "    dataset:",
            f"      type: {yaml_str(f['dataset_name'])}",
            f"      name: {yaml_str(f['dataset_name'])}",
            f"      split: {yaml_str('validation')}",
            "    metrics:",
        ]
        for name, kind, value in f["metrics"]:
            lines += [f"    - type: {yaml_str(kind)}", f"      name: {yaml_str(name)}",
                      f"      value: {yaml_number(value)}"]
    lines.append("---")
    return "\n".join(lines) + "\n"


def _body(f: dict, results: dict, recipe: dict, recipe_text: str) -> str:
    parts = [f"# {f['name']}", "", _summary(f, results), ""]
    parts += ["## Training", "", _training(f, results), ""]
    parts += ["## Results", "", _results(f, results), ""]
    if recipe_text:
        parts += ["## Recipe", "",
                  "The resolved recipe (the recipe file, its `--set` overrides and every default), as the run wrote "
                  "it to `recipe.toml`; train again with `llmctl "
                  f"{'finetune' if f['finetuned'] else 'pretrain'} recipe.toml` (data paths as on the "
                  "machine that trained it):", "", _fence(recipe_text, "toml"), ""]
    parts += ["## Environment", "", _environment(results.get("environment")), ""]
    parts += ["## How to use", "", _usage(f, results)]
    return "\n".join(parts)


def _summary(f: dict, results: dict) -> str:
    what = TASK_WORDS.get(f["task"], f["task"])
    config = f["config"]
    family = (config.get("llmctl") or {}).get("family") or results.get("family")
    from llmctl.tasks.base import FAMILY_NAMES

    kind = f"{results.get('model') or config.get('model_type') or f['arch']}"
    if family in FAMILY_NAMES:
        kind += f", {FAMILY_NAMES[family]}"
    params = results.get("parameters")
    text = f"A {what} ({kind}" + (f", {_fmt(params)} parameters" if _number(params) else "") + ")"
    if f["base"]:
        origin = f"[{f['base']}](https://huggingface.co/{f['base']})" if f["hub_base"] else f"`{f['base']}`"
        text += f", fine-tuned from {origin}" if f["finetuned"] else f", pretraining continued from {origin}"
        if not f["hub_base"]:
            text += " (a local model directory)"
    else:
        text += f", trained from scratch (`model.arch = \"{f['arch']}\"`)"
    text += f" with [llmctl](#environment) by the recipe `{f['name']}`."
    labels = (config.get("llmctl") or {}).get("labels")
    if labels:
        text += " Labels: " + ", ".join(f"`{x}`" for x in labels) + "."
    if results.get("lora"):
        lo = f["lora"]
        detail = f"r={lo.get('r')}, alpha={lo.get('alpha')}" if lo else ""
        if f["adapter"]:
            text += (f"\n\nThis folder holds the LoRA adapter ({detail}) in PEFT format, not a full model: it "
                     "applies to the base model above. `llmctl export RUN --to DIR --merge-lora` gives the "
                     "standalone merged model.")
            if not f["base"]:
                text += (" The base model was built from scratch (seeded by the recipe's `seed`), so the adapter "
                         "is of use with that run's base weights only; prefer the merged export.")
        else:
            text += f"\n\nTrained with LoRA ({detail}); the adapter is merged into the weights in this folder."
    return text


def _training(f: dict, results: dict) -> str:
    rows = [
        ("optimizer steps", results.get("steps")),
        ("stopped early", results.get("stopped_early")),
        ("best step", results.get("best_step")),
        ("best checkpoint by", results.get("best_metric")),
        ("tokens seen", results.get("tokens_seen")),
        ("precision", results.get("precision")),
        ("processes (world size)", results.get("world_size")),
        ("LoRA", bool(results.get("lora"))),
        ("parameters", results.get("parameters")),
        ("trainable parameters", results.get("trainable_parameters")),
        ("training time", _seconds(results.get("train_seconds"))),
        ("wall time", _seconds(results.get("wall_seconds"))),
        ("tokens per second", _seconds(results.get("tokens_per_sec"), unit="")),
        ("model FLOPs utilization", results.get("mfu")),
        ("training data", ", ".join(f"`{n}`" for n in _file_names(f["train_files"])) or None),
    ]
    if f["validation_files"]:
        rows.append(("validation data", ", ".join(f"`{n}`" for n in _file_names(f["validation_files"]))))
    elif f["fraction"] is not None:
        rows.append(("validation data", f"{f['fraction']:g} of the training data held out (seed {f['seed']})"))
    if results.get("validation_examples") is not None:
        rows.append(("validation examples", results["validation_examples"]))
    lines = ["| | |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(_fmt(v))} |" for k, v in rows if v is not None]
    return "\n".join(lines)


def _results(f: dict, results: dict) -> str:
    split = "the validation split"
    if not f["finetuned"]:
        rows = [("validation perplexity", results.get("initial_val_perplexity"), results.get("val_perplexity")),
                ("validation loss", None, results.get("val_loss")),
                ("training loss (last steps)", None, results.get("train_loss"))]
        lines = [f"On {split}; before training is the untrained model, at step 0.", "",
                 "| metric | before training | trained |", "|---|---:|---:|"]
        lines += [f"| {k} | {_fmt(a)} | {_fmt(b)} |" for k, a, b in rows if b is not None]
        refs = [("unigram perplexity (a model of token frequencies)", results.get("unigram_perplexity")),
                ("uniform perplexity (vocabulary size)", results.get("uniform_perplexity")),
                ("perplexity / unigram perplexity", results.get("perplexity_vs_unigram"))]
        refs = [(k, v) for k, v in refs if v is not None]
        if refs:
            lines += ["", "Baselines: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in refs) + "."]
        samples = results.get("samples") or []
        if samples:
            lines += ["", "Samples (prompt, then the model's continuation):", ""]
            lines += [_fence(s.get("prompt", "") + s.get("continuation", ""), "text") for s in samples]
        return "\n".join(lines)
    initial, base = results.get("initial_metrics") or {}, results.get("baseline_metrics") or {}
    lines = [f"On {split} ({_fmt(results.get('validation_examples'))} examples). Untrained: the model before "
             "training (step 0); baseline: the task's trivial baseline.", "",
             "| metric | untrained | baseline | trained |", "|---|---:|---:|---:|"]
    for name, _, value in f["metrics"]:
        lines.append(f"| {_md(name)} | {_fmt(initial.get(name))} | {_fmt(base.get(name))} | {_fmt(value)} |")
    if results.get("capped_outputs"):
        lines += ["", f"{results['capped_outputs']} outputs stopped at max_new_tokens ({results.get('max_new_tokens')})"
                      " without an end of sequence."]
    return "\n".join(lines)


def _environment(env) -> str:
    if not env:
        return "Not recorded (the run was made by an llmctl version that did not record it)."
    lo = env.get("llmctl") or {}
    llmctl = f"llmctl {lo.get('version') or '(unknown version)'}"
    if lo.get("git_commit"):
        llmctl += f" (git commit `{lo['git_commit']}`" + (", with uncommitted changes" if lo.get("git_dirty") else "") + ")"
    pkgs = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    dev = env.get("device") or {}
    cpu = f"CPU: {dev.get('cpu') or 'unknown'}, {dev.get('cpu_count')} cores, " + \
          ("native bf16" if dev.get("native_bf16") else "no native bf16")
    gpus = dev.get("gpus") or []
    gpu = f"GPUs: {dev.get('gpu_count', len(gpus))} x {', '.join(dict.fromkeys(gpus))}" if gpus else "GPUs: none"
    lines = [f"- {llmctl}", f"- {pkgs}", f"- Python {env.get('python')} on {env.get('platform')}", f"- {cpu}",
             f"- {gpu}"]
    data = env.get("data") or {}
    if data:
        lines += ["", "Data files (SHA-256 of their content):", "", "| file | sha256 |", "|---|---|"]
        lines += [f"| `{_md(Path(p).name)}` | `{h or 'unreadable'}` |" for p, h in data.items()]
    return "\n".join(lines)


def _usage(f: dict, results: dict) -> str:
    auto, task = f["auto"], f["task"]
    lines = []
    if f["adapter"]:
        peft_auto = _PEFT_AUTO.get(auto)
        lines += ["With transformers and PEFT:", ""]
        base = f["hub_base"] or f["base"] or "path/to/the/base/model"
        code = (f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n\n"
                f"base = {auto}.from_pretrained({json.dumps(base)})\n"
                f"model = PeftModel.from_pretrained(base, {json.dumps(PLACEHOLDER)})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(PLACEHOLDER)})")
        if peft_auto and f["hub_base"]:
            code += (f"\n# or in one step:\n# from peft import {peft_auto}\n"
                     f"# model = {peft_auto}.from_pretrained({json.dumps(PLACEHOLDER)})")
        lines += [_fence(code, "python")]
        return "\n".join(lines)
    path = json.dumps(PLACEHOLDER)
    code = f"from transformers import {auto}, AutoTokenizer\n\n" \
           f"model = {auto}.from_pretrained({path})  # or the hub id once pushed\n" \
           f"tokenizer = AutoTokenizer.from_pretrained({path})\n"
    if auto == "AutoModelForSequenceClassification":
        code += ('\ninputs = tokenizer("a text to classify", return_tensors="pt")\n'
                 "label = model.config.id2label[model(**inputs).logits.argmax(-1).item()]\n")
    elif f["finetuned"] and f["generates"]:
        info = f["config"].get("llmctl") or {}
        max_new = info.get("max_new_tokens") or 64
        if auto == "AutoModelForSeq2SeqLM":
            prefix = info.get("source_prefix") or ""
            source = f"{json.dumps(prefix)} + document" if prefix else "document"
            code += ('\ndocument = "The text to process."\n'
                     f'inputs = tokenizer({source}, return_tensors="pt")\n'
                     f"out = model.generate(**inputs, max_new_tokens={max_new})\n"
                     "print(tokenizer.decode(out[0], skip_special_tokens=True))\n")
        else:  # decoder-only: the run's prompt around the document, the output after it
            code += ('\ndocument = "The text to process."\n'
                     f"prompt = {json.dumps(info.get('prompt') or '{source}')}.replace(\"{{source}}\", document)\n"
                     'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)\n'
                     f"out = model.generate(**inputs, max_new_tokens={max_new})\n"
                     'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n')
    elif auto in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM"):
        code += ('\ninputs = tokenizer("The ", return_tensors="pt")\n'
                 "out = model.generate(**inputs, max_new_tokens=40)\n"
                 "print(tokenizer.decode(out[0], skip_special_tokens=True))\n")
    lines += ["With transformers alone:", "", _fence(code, "python")]
    commands = _commands()
    cli = []
    if not f["finetuned"]:
        cli.append(f"llmctl eval --metric perplexity --model {PLACEHOLDER} --data corpus.txt")
        if "generate" in commands:
            cli.append(f"llmctl generate --model {PLACEHOLDER} --prompt \"The \"")
    else:
        cli.append(f"llmctl eval --model {PLACEHOLDER} --data validation.jsonl")
        if f["generates"] and "summarize" in commands:  # documents in, one output each
            cli.append(f"llmctl summarize --model {PLACEHOLDER} docs/ --output outputs.jsonl")
        if f["generates"] and "generate" in commands:
            cli.append(f"llmctl generate --model {PLACEHOLDER} --prompt \"$(cat document.txt)\"")
    intro = "With llmctl"
    if f["finetuned"]:
        intro += (", which feeds the model as the run did (`config.json` records the prompt, source prefix and "
                  "lengths under `llmctl`); `eval --data` takes a file with the columns of the training data")
    lines += ["", intro + ":", "", _fence("\n".join(cli), "bash")]
    return "\n".join(lines)
