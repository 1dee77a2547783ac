"""The task interface: what every task owns, and the defaults most tasks share.

A task is one object with a small fixed surface (lm-evaluation-harness's idea, without the YAML): how a record
becomes an example (`normalize`), which texts a tokenizer is trained on, how the model reads the task (`spec`,
derived once from the training data and saved with the model), the features that training and the validation
loss both use (`features`, one implementation), the collator, how model outputs become predictions (`predict`),
how predictions are scored (`score`), the trivial baseline, the default metrics and the metric that picks the
best checkpoint, and the model families it supports. The stages (`finetune`, `eval`, `summarize`) ask the task
object and never branch on a task's name.

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


def compute_metrics(names: list[str], predictions: list, references: list, kwargs: dict) -> dict:
    """Run each metric and flatten its result to `metric.key` -> value."""
    from llmctl import metrics as metric_mod

    out = {}
    for name in names:
        result = metric_mod.compute(name, predictions, references, **kwargs.get(name, {}))
        out.update({f"{name}.{key}": value for key, value in result.items()})
    return out
