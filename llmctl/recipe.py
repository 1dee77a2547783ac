"""Recipes: TOML files validated by a pydantic schema.

`load(path, overrides)` reads the TOML, applies each `--set a.b=value` (the value parsed as a TOML value, so
`train.lr=3e-4` is a float and `model.path=runs/x/final` a string), validates once, and raises `RecipeError` with
every problem at once. This module imports only the standard library and pydantic, so the CLI stays fast.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TASKS = ("causal_lm", "summarization", "translation", "classification", "qa", "multiple_choice")


class RecipeError(Exception):
    """A recipe problem the user must fix; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Section(BaseModel):
    # strict: an override must keep the default's type ("4" is not an int); frozen: stages cannot mutate it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ModelSection(_Section):
    # A transformers `model_type` (gpt2, llama, t5, bart, bert, ...) used when building a model from scratch.
    arch: str = "gpt2"
    # A pretrained model directory or hub id. Empty: build a fresh model from `arch` and `config`.
    path: str = ""
    # Keyword arguments for the transformers config class of `arch` (n_layer, hidden_size, ...). The vocabulary
    # size, special token ids and the context length are filled in from the tokenizer and `data.block_size`.
    config: dict[str, int | float | str | bool] = Field(default_factory=dict)


class TokenizerSection(_Section):
    # An existing tokenizer directory or hub id. Empty: use the tokenizer of `model.path` if there is one,
    # otherwise train a byte-level BPE tokenizer on the training split.
    path: str = ""
    vocab_size: int = Field(8192, gt=256, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    eos_token: str = "<|endoftext|>"
    # Padding is only ever used for the last, shorter block and in fine-tuning batches; it is masked out of the loss.
    pad_token: str = "<|pad|>"
    extra_special_tokens: list[str] = Field(default_factory=list)


class DataSection(_Section):
    # Local files: .txt, .jsonl, .json (JSON Lines or a JSON document), .csv, .tsv, .parquet.
    train_files: list[str] = Field(default_factory=list)
    # Empty: hold out `validation_fraction` of the training documents.
    validation_files: list[str] = Field(default_factory=list)
    # A hub dataset id (needs network), used instead of train_files.
    hub_dataset: str = ""
    hub_config: str = ""
    # Column mapping. Empty = the task's default (causal_lm/classification: "text", summarization: "document").
    text_column: str = ""
    # classification: the second sentence of a pair ("" = single sentences).
    text_pair_column: str = ""
    # summarization: the reference summary; classification: see label_column.
    target_column: str = ""
    label_column: str = "label"
    # translation: records {"translation": {"en": ..., "ro": ...}} or two columns named after the languages.
    translation_column: str = "translation"
    source_lang: str = "en"
    target_lang: str = "ro"
    # qa: SQuAD-style columns; answers = {"text": [...], "answer_start": [...]}.
    id_column: str = "id"
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = "answers"
    # Fine-tuning input lengths in tokens (sources are truncated; targets longer than this are cut and counted).
    max_source_length: int = Field(512, gt=1)
    max_target_length: int = Field(128, gt=0)
    # Causal LMs on generation tasks: the prompt around the source ({source}); the target follows it and the
    # loss covers the target only. Empty = the task's default.
    prompt: str = ""
    # Encoder-decoder models: text put before every source, e.g. "summarize: " for T5 checkpoints.
    source_prefix: str = ""
    # qa: window length and overlap for contexts longer than max_source_length.
    doc_stride: int = Field(128, gt=0)
    # How a .txt file splits into documents: at blank lines, at every line, or one document per file.
    txt_documents: Literal["blank_line", "line", "file"] = "blank_line"
    validation_fraction: float = Field(0.05, gt=0, lt=1)
    # Tokens per packed training sequence; documents are joined with EOS and cut into blocks of this length.
    block_size: int = Field(256, gt=1)
    # Worker processes for tokenization (datasets.map); small corpora are tokenized in-process regardless.
    num_proc: int = Field(2, ge=1)
    # Pretraining: stream the documents from the files (or the hub dataset, with `datasets` streaming) through the
    # tokenizer into packed blocks, without first writing the raw text to an Arrow cache; every k-th document
    # (k = 1 / validation_fraction) is held out when there are no validation files.
    streaming: bool = False


class TrainSection(_Section):
    # The two clocks: a micro-batch is one forward/backward pass on one process; an optimizer step consumes
    # `batch_size` sequences = micro_batch_size x processes x gradient-accumulation steps. Every interval below
    # counts optimizer steps.
    batch_size: int = Field(32, gt=0)
    micro_batch_size: int = Field(8, gt=0)
    max_steps: int = Field(1000, gt=0)
    lr: float = Field(1e-3, gt=0)
    # Cosine decay from lr to min_lr after a linear warmup.
    min_lr: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    # Max global gradient norm; 0 disables clipping.
    grad_clip: float = Field(1.0, ge=0)
    # auto: on a GPU bf16 where supported, else fp16 with a gradient scaler; on a CPU bf16 autocast when it has
    # native bf16 (AMX / AVX512-BF16, confirmed by a short GEMM probe cached per machine), else fp32. "bf16"
    # works on any CPU (without native bf16 it is far slower than fp32); "fp16" needs a GPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch.compile of the model for the training steps. auto: only when the batches have static shapes
    # (pretraining), on one process, for runs long enough to pay back the compile time (llmctl/compile.py).
    compile: Literal["auto"] | bool = "auto"
    # Fine-tuning: draw micro-batches of examples of similar length (within windows of 50 steps' worth of the
    # shuffled epoch; the windows' chunks are shuffled again), so a batch pads little. Deterministic and resumable.
    # Off by default: whether it pays depends on the data and model (docs/speed.md); the shipped classification
    # recipe turns it on (1.32x tokens/s there, same accuracy).
    group_by_length: bool = False
    # Fine-tuning a decoder-only model on a text-to-text task: lay the examples of a micro-batch into shared rows,
    # attention and positions kept apart per example, same loss. true: a check on the model itself must show that
    # packed examples do not see each other; auto: pack when it does (else pad, with a note). Off by default: on
    # the embedded summaries, whose lengths vary little, it measured 0.95x (docs/speed.md).
    packing: Literal["auto"] | bool = False
    log_every: int = Field(10, gt=0)
    eval_every: int = Field(100, gt=0)
    # Validation micro-batches per evaluation; 0 = the whole validation split.
    eval_batches: int = Field(0, ge=0)
    checkpoint_every: int = Field(200, gt=0)
    # How many checkpoints to keep on disk (oldest deleted first).
    keep_checkpoints: int = Field(2, gt=0)
    # An Accelerate config file (DDP, FSDP, DeepSpeed) used by `--num-processes` launches; empty = plain DDP.
    accelerate_config: str = ""
    # A non-finite loss or gradient norm stops the run with an error naming the step (nothing from that step is
    # saved); N > 0 skips up to N such updates instead (the step's data is passed over, the count survives resume).
    skip_nonfinite: int = Field(0, ge=0)
    # Experiment trackers that get every logged step and evaluation, through Accelerate: "tensorboard" (offline;
    # event files in <run>/tracking/), "wandb", "mlflow" (each needs its package installed).
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _batch_divides(self) -> "TrainSection":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")
        return self


class SampleSection(_Section):
    # Prompts continued by the trained model at the end of `pretrain`, so a newcomer sees what it learned.
    prompts: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(40, gt=0)
    temperature: float = Field(0.8, gt=0)
    top_k: int = Field(40, ge=0)


class EvalSection(_Section):
    # Task metrics computed on the validation split every train.eval_every steps; [] = the task's default.
    metrics: list[str] = Field(default_factory=list)
    # The metric key that picks the best checkpoint (exported as final/), e.g. "rougeL", "score", "accuracy",
    # "f1" or "loss". Empty = the task's default.
    best_metric: str = ""
    # Stop after this many evaluations without improvement; 0 = never stop early.
    patience: int = Field(0, ge=0)
    # Validation examples used by in-training evaluation; 0 = all. The final evaluation always uses all.
    max_samples: int = Field(0, ge=0)
    # ROUGE tokenizer: "auto" (per character when the text has CJK), "default" (rouge_score's), "char".
    rouge_tokenizer: Literal["auto", "default", "char"] = "auto"


class GenerationSection(_Section):
    # 0 = derive from the longest target in the training data (+10%), never generate's 20-token default.
    max_new_tokens: int = Field(0, ge=0)
    num_beams: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    no_repeat_ngram_size: int = Field(0, ge=0)
    # Rows per generation batch at the longest input allowed; batches of shorter inputs take more rows in the
    # same tokens, up to llmctl.generation.MAX_BATCH_GROWTH times as many.
    batch_size: int = Field(16, gt=0)
    # Arithmetic of generation in evaluations: "fp32" (metrics do not depend on the machine), "bf16" (autocast;
    # faster where bf16 is native, and it flips some near-tied greedy choices) or "auto" (bf16 where native).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"


class LoraSection(_Section):
    # Train low-rank adapters (peft) instead of all weights; the adapter is saved in PEFT format and a merged
    # model is exported to final/.
    enabled: bool = False
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # Module names to adapt; [] = peft's default for the architecture.
    target_modules: list[str] = Field(default_factory=list)


class Recipe(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    # What the recipe trains: causal_lm (pretrain); summarization, translation, classification, qa or
    # multiple_choice (finetune).
    task: Literal["causal_lm", "summarization", "translation", "classification", "qa", "multiple_choice"] = "causal_lm"
    seed: int = 1234
    model: ModelSection = Field(default_factory=ModelSection)
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    lora: LoraSection = Field(default_factory=LoraSection)

    @model_validator(mode="after")
    def _has_source(self) -> "Recipe":
        # Checked here rather than in DataSection, so that `eval` can use a run's column mapping on its own.
        if not self.data.train_files and not self.data.hub_dataset:
            raise ValueError("set data.train_files (local files) or data.hub_dataset (a hub dataset id)")
        return self


def json_schema() -> dict:
    """The recipe format as a JSON Schema (draft 2020-12): every key, its type, bounds, default and comment-free
    title; unknown keys are refused (`additionalProperties: false`), as `load` refuses them."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llmctl recipe"
    return schema


# ---------------------------------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value). The value is read as TOML; if that fails it is taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError([f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=3e-4"])
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError([f"--set {text!r}: {part!r} is a value, not a table"])
            node = child
        node[path[-1]] = value
    return data


def data_overrides(data_files: list[str] = (), validation_files: list[str] = ()) -> list[str]:
    """`--data F` (repeatable) means the user's data: it replaces the recipe's training *and* validation sources
    (validation is then held out from it, `data.validation_fraction`), unless `--validation-data F` names the
    validation files. These come before the user's `--set`s, which may still change them."""
    def files(names):
        return "[" + ", ".join(_toml_value(str(n)) for n in names) + "]"

    out = []
    if data_files:
        out += [f"data.train_files={files(data_files)}", f"data.validation_files={files(validation_files)}",
                'data.hub_dataset=""', 'data.hub_config=""']
    elif validation_files:
        out.append(f"data.validation_files={files(validation_files)}")
    return out


def read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{path}: recipe file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{path}: cannot read recipe: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: invalid TOML: {exc}"]) from None


def load(path: Path | str | None, overrides: list[str] = (), *, base: dict | None = None) -> Recipe:
    """Read a recipe file (or start from `base`), apply overrides, validate. Raises RecipeError."""
    origin = str(path) if path is not None else "recipe"
    data = read_toml(Path(path)) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides))
    return validate(data, origin)


def _non_finite(data, prefix: str = "") -> list[str]:
    """Dotted keys (anywhere, model.config included) whose value is a NaN or infinite number."""
    found = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            found.append(f"{key}: must be a finite number, not {v}")
        elif isinstance(v, (dict, list)):
            found.extend(_non_finite(v, key))
    return found


def validate(data: dict, origin: str = "recipe") -> Recipe:
    bad = _non_finite(data)
    if bad:
        raise RecipeError([f"{origin}: {line}" for line in bad])
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError([f"{origin}: {line}" for line in _describe(exc)]) from None


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, prefix + name + "."))
    return keys


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


def _describe(exc: ValidationError) -> list[str]:
    valid = _valid_keys(Recipe)
    lines = []
    for err in exc.errors(include_url=False):
        # A key may hold a newline or other control characters (`--set $'a\nb=1'`): escaped, so the error stays
        # one line.
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        loc = [p if p.isprintable() else p.encode("unicode_escape").decode("ascii") for p in loc]
        key = ".".join(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent, _, leaf = key.rpartition(".")
            siblings = {k.rpartition(".")[2]: k for k in valid if k.rpartition(".")[0] == parent}
            close = [siblings[m] for m in difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.7)]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"unknown key '{key}'{hint}")
        elif kind == "missing":
            lines.append(f"missing required key '{key}'")
        elif kind == "value_error":
            # Our own model validators: the message already names the keys.
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(msg if not key else f"{key}: {msg}")
        else:
            value = err.get("input")
            expected = _EXPECTED.get(kind)
            if expected:
                what = f"expected {expected}, got {type(value).__name__} {value!r}"
            else:
                msg = str(err["msg"])
                what = f"{msg[0].lower()}{msg[1:]}, got {value!r}"
            lines.append(f"{key}: {what}")
    return lines


# ---------------------------------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def dumps(recipe: Recipe | dict) -> str:
    """The resolved recipe as TOML (scalars first, then one table per section)."""
    data = recipe.model_dump() if isinstance(recipe, BaseModel) else recipe
    lines = ["# Resolved recipe written by llmctl: the file, the --set overrides and every default."]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, body in data.items():
        if not isinstance(body, dict):
            continue
        lines += ["", f"[{section}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"
