"""The task interface: what every task owns, and the defaults most tasks share.

A task is one object with a small fixed surface (lm-evaluation-harness's idea, without the YAML): how a record
becomes an example (`normalize`), which texts a tokenizer is trained on, how the model reads the task (`spec`,
derived once from the training data and saved with the model), the features that training and the validation
loss both use (`features`, one implementation), the collator, how model outputs become predictions (`predict`),
how predictions are scored (`score`), the trivial baseline, the default metrics and the metric that picks the
best checkpoint, the model families it supports, and how `llmctl serve` answers its model (`endpoint`,
`serve_request`, `serve_batch`, `serve_response`). The stages (`finetune`, `eval`, `summarize`, `serve`) ask the
task object and never branch on a task's name.

A `Spec` is everything a task needs besides the tokenizer to turn examples into model inputs and outputs into
predictions. `finetune` derives it from the recipe and the training split; it is saved in the model's config
(`config.llmctl`), so `eval` and `summarize` use a finished model exactly as the run did.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

FAMILY_NAMES = {"seq2seq": "encoder-decoder", "causal": "decoder-only", "encoder": "encoder-only"}


@dataclass(frozen=True)
class Spec:
    """How a model reads one task; saved as `config.llmctl` and read back by `Spec.from_info`."""

    task: str
    family: str
    # Tokens the model input may take (the source budget of generation tasks, the window of span tasks).
    max_source_length: int
    # The model's context when input and output share it (decoder-only); None for encoder-decoders.
    context: int | None = None
    max_target_length: int = 0
    prompt: str = ""
    source_prefix: str = ""
    doc_stride: int = 0
    max_new_tokens: int | None = None
    # Classification: the label of each class id, as text (config.id2label holds the same).
    labels: tuple[str, ...] = ()

    def to_info(self) -> dict:
        info = asdict(self)
        info["labels"] = list(self.labels)
        return info

    @classmethod
    def from_info(cls, info: dict, **defaults) -> "Spec":
        """A spec from a saved `config.llmctl`; keys it lacks (models saved by older versions) take `defaults`."""
        known = {f.name for f in fields(cls)}
        values = {**defaults, **{k: v for k, v in info.items() if k in known and v is not None}}
        values["labels"] = tuple(str(x) for x in values.get("labels") or ())
        return cls(**values)


@dataclass
class Predictions:
    """Per-example predictions in the form the task's `score` takes, plus what generation reported."""

    items: list
    # Generation tasks: per item, whether the output stopped at max_new_tokens without an EOS.
    capped: list[bool] = field(default_factory=list)


class RecordCheck:
    """Checks that span the records of a split, fed one example at a time in file order, so a split of any size
    streams through them: `keep` says whether to keep an example (and may raise on a bad one, naming `where`);
    `done` runs after the last one, may raise a split-level error, and returns how many examples were dropped."""

    def keep(self, where: str, example: dict) -> bool:
        return True

    def done(self) -> int:
        return 0


# -------------------------------------------------------------------------------------------------- serving


class RequestError(Exception):
    """A request to `llmctl serve` that cannot be answered: an HTTP status, a message and an error type. Raised
    by the tasks' `serve_request` and by the server alike, and answered as `{"error": {message, type, code}}`."""

    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def request_text(body: dict, key: str) -> str:
    """The non-empty string `body[key]` of a request, else a 400."""
    value = body.get(key)
    if value is None:
        raise RequestError(400, f"missing field '{key}'", "invalid_request")
    if not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string, got {type(value).__name__}", "invalid_request")
    if not value.strip():
        raise RequestError(400, f"'{key}' is empty", "invalid_request")
    return value


def request_number(body: dict, key: str, default: float, *, low: float, high: float | None = None) -> float:
    """The number `body[key]` of a request within [low, high], `default` when absent, else a 400."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high and value > high):
        bounds = f"between {low:g} and {high:g}" if high else f"at least {low:g}"
        raise RequestError(400, f"'{key}' must be a number {bounds}, got {value!r}", "invalid_request")
    return float(value)


class ServeInputs:
    """What `llmctl serve` lets a request hold, as the tasks' `serve_request` sees it (the server passes its own
    object with these methods; this class documents them). Each raises `RequestError`."""

    def fit(self, text: str, what: str) -> str:
        """`text` within the server's input limit: cut to fit (--long-input truncate) or a 413 (reject)."""
        raise NotImplementedError

    def check(self, text: str, what: str) -> None:
        """A 413 for `text` over the input limit under --long-input reject; nothing under truncate (for inputs
        the task reads whole in windows)."""
        raise NotImplementedError

    def new_tokens(self, value, key: str) -> int:
        """A request's max_new_tokens (`value`, None when absent: the model's default), within the server's cap."""
        raise NotImplementedError


@dataclass(kw_only=True)
class Task:
    """Defaults shared by the tasks; each task module defines a subclass and one instance of it."""

    name: str
    families: tuple[str, ...]
    default_metrics: tuple[str, ...]
    best_metric: str
    # transformers Auto class per family (attribute names of the transformers package).
    auto_classes: dict[str, str] = field(default_factory=dict)
    # peft TaskType name per family, for LoRA.
    peft_types: dict[str, str] = field(default_factory=dict)
    # Modules LoRA trains in full next to the adapters (a new head that peft's task type does not know).
    lora_modules_to_save: tuple[str, ...] = ()
    # False for the pretraining task, which `llmctl pretrain` trains on packed blocks.
    finetunable: bool = True
    # Text generation tasks can be used by `summarize` and report capped outputs.
    generates: bool = False
    # The POST endpoint `llmctl serve` answers the task's models on ("/v1/summarize"); None: not served.
    endpoint: str | None = None

    # ---------------------------------------------------------------------------------------------- records

    def normalize(self, where: str, rec: dict, d) -> dict:
        """One record of a data file as this task's example; errors name `where` (file and line) and column."""
        raise NotImplementedError

    def check(self) -> RecordCheck:
        """A fresh checker for one split: drops examples that cannot be learned from, and rejects what is
        inconsistent across records (label types, duplicate ids, ...)."""
        return RecordCheck()

    def clean(self, examples: list[dict], where: list[str]) -> tuple[list[dict], list[str], int]:
        """`check` over a split held in lists; returns (examples, where, how many were dropped)."""
        checker = self.check()
        kept = [(ex, w) for ex, w in zip(examples, where, strict=True) if checker.keep(w, ex)]
        dropped = checker.done()
        return [ex for ex, _ in kept], [w for _, w in kept], dropped

    def tokenizer_texts(self, examples: Iterable[dict]) -> Iterator[str]:
        """The texts a tokenizer trained for this task learns from."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- model

    def spec(self, recipe, tokenizer, train: list[dict], family: str, context: int | None, say) -> Spec:
        """How the model reads the task, derived from the recipe and the training split."""
        d = recipe.data
        return Spec(task=self.name, family=family, context=context,
                    max_source_length=min(d.max_source_length, context or d.max_source_length))

    def spec_from_info(self, info: dict, config, family: str, context: int | None) -> Spec:
        """The spec of a saved model: its config.llmctl, with defaults for what older versions did not save."""
        return Spec.from_info(info, task=self.name, family=family, context=context,
                              max_source_length=context or 512)

    def config_overrides(self, spec: Spec) -> dict:
        """Keyword arguments for the model's config (a classification head's labels)."""
        return {}

    def auto_class(self, family: str):
        import transformers

        return getattr(transformers, self.auto_classes[family])

    def check_family(self, family: str, model_type: str, source: str) -> None:
        from llmctl.modeling import ModelError

        if family not in self.families:
            raise ModelError(f"{source}: {model_type} is {FAMILY_NAMES[family]} and cannot do {self.name} "
                             f"(needs {' or '.join(FAMILY_NAMES[f] for f in self.families)})")

    # ---------------------------------------------------------------------------------------------- features

    def features(self, examples: list[dict], where: list[str], tokenizer, spec: Spec) -> tuple[list[dict], int]:
        """Tokenized examples with labels, for training and for the validation loss alike; returns them and the
        number of targets cut to fit."""
        raise NotImplementedError

    def collator(self, pad_id: int):
        raise NotImplementedError

    def packs(self, spec: Spec) -> bool:
        """Whether features of this task under `spec` may be packed into shared rows (`llmctl.batches.pack`):
        causal-LM examples whose loss is per token, with `input_ids` and `labels` of equal length only."""
        return False

    # ------------------------------------------------------------------------------------------- predictions

    def prediction_options(self, examples: list[dict]) -> dict:
        """Options `predict` takes that depend on the whole split, not the shard one process sees."""
        return {}

    def predict(self, model, examples: list[dict], where: list[str], tokenizer, spec: Spec, generation,
                **options) -> Predictions:
        """The model's predictions for `examples`, in order. `generation` holds the generation settings."""
        raise NotImplementedError

    def metric_kwargs(self, eval_cfg, spec: Spec) -> dict:
        """Options per metric name."""
        return {}

    def score(self, names: list[str], predictions: list, examples: list[dict], where: list[str], spec: Spec,
              kwargs: dict) -> dict:
        """Each metric over the predictions, flattened to `metric.key` -> value."""
        raise NotImplementedError

    def baseline(self, train: list[dict], examples: list[dict], spec: Spec) -> list:
        """The trivial baseline's predictions for `examples`, in the form `score` takes."""
        raise NotImplementedError

    def row(self, example: dict, prediction, spec: Spec) -> dict:
        """One line of predictions.jsonl: the inputs, the prediction and the reference, readable."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------- serving
    # `llmctl serve` answers requests to `endpoint` with these: each request body becomes a work item and a batch
    # key (`serve_request`, before it queues); requests with equal keys are answered together by one
    # `serve_batch` call, in a worker thread; each result becomes the response body (`serve_response`).

    def serve_input_limit(self, model, tokenizer, spec: Spec, settings) -> int | None:
        """Input tokens the model reads per text (serve's --max-input-tokens is at most this)."""
        return spec.max_source_length

    def serve_request(self, body: dict, inputs: ServeInputs) -> tuple[tuple, object]:
        """(batch key, work item) of a request body (a JSON object); `RequestError` (400, 413) when it cannot be
        answered. The item is JSON-serializable (its length orders a batch)."""
        raise NotImplementedError

    def serve_batch(self, model, key: tuple, items: list, tokenizer, spec: Spec, settings) -> list[dict]:
        """The result of each work item of one batch key, in order; `settings` are the generation settings
        `eval` and `summarize` use for the model."""
        raise NotImplementedError

    def serve_response(self, model_name: str, result: dict) -> dict:
        """The response body for one result."""
        return {"model": model_name, **result}


def compute_metrics(names: list[str], predictions: list, references: list, kwargs: dict) -> dict:
    """Run each metric and flatten its result to `metric.key` -> value."""
    from llmctl import metrics as metric_mod

    out = {}
    for name in names:
        result = metric_mod.compute(name, predictions, references, **kwargs.get(name, {}))
        out.update({f"{name}.{key}": value for key, value in result.items()})
    return out
