"""`llmctl compress RUN --to DIR`: int8 weights for CPU inference, measured before and after on the run's
validation split.

    llmctl compress runs/summarization --to deploy/summarizer
    llmctl compress runs/classification --to deploy/cls --sparsity 0.3     # magnitude pruning, then int8

What is done. Every linear layer (nn.Linear, and the Conv1D of GPT-2) and the input word embeddings get int8
weights with one fp32 scale per output row (symmetric, round to nearest). Linear layers with at least
`--min-features` input features run as dynamic int8: each row of the activations is quantized to int8 with its own
scale at run time, multiplied with `torch._int_mm` (int8 x int8 -> int32, exact) and rescaled. Because every row
has its own scale, a row's output does not depend on what else is in the batch, so a served request gets the same
answer alone or batched with others. Smaller layers, and the embeddings, are int8 on disk only and are turned back
into fp32 at load time: below about 256 input features the int8 kernel's fixed cost per call is larger than what it
saves (tests/bench_deploy.py measures both). `--sparsity S` first zeroes the fraction S of each linear layer's
weights of smallest magnitude; the kernels are dense, so pruning alone makes nothing smaller or faster.

Why not PyTorch's quantization APIs: `torch.ao.quantization.quantize_dynamic` is deprecated in torch 2.13 (its
warning says it moves to torchao) and makes quantized tensors, whose creation functions are deprecated too; it
quantizes activations per tensor, so a request's output would change with its batch; and its modules are saved
with pickle. torchao's eager `quantize_` (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig) measured
slower than fp32 on this CPU without torch.compile. The kernel used here is a core op.

The format. DIR holds config.json, the tokenizer and the model card of the run's final/ (no model weights),
`model.int8.safetensors` (int8 weights as `NAME::int8` and their scales as `NAME::scale`, every other tensor in
fp32) and `llmctl-int8.json`, the manifest (which tensors are quantized, which are aliases of others, which
layers run in int8). Loading builds the model from config.json (no code from the folder is run) and fills it
from the safetensors file: no pickle is read. `llmctl.modeling.load_pretrained` loads such a folder, so `eval`,
`summarize`, `generate` and `serve` take it like any model directory. `compress-report.json` holds the figures.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from llmctl import runs
from llmctl.int8 import MANIFEST, WEIGHTS, is_compressed, prune_, save_int8  # noqa: F401 (re-exported)

REPORT = "compress-report.json"
# Input features from which a linear layer runs in int8 (below: int8 on disk, fp32 at run time).
DEFAULT_MIN_FEATURES = 256
# Files of final/ that hold the fp32 model (left out of DIR).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
# Metrics on a 0-100 scale (the others are 0-1): the target "within 1 point" or "within 0.01" follows it.
_PERCENT_METRICS = ("sacrebleu", "chrf", "squad", "squad_v2")


class CompressError(runs.RunError):
    """A run or folder that cannot be compressed or loaded (one line)."""


# ------------------------------------------------------------------------------------------------- measure


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def weight_bytes(model_dir: Path) -> int:
    """Bytes of the files that hold a folder's weights (fp32 safetensors/bin, or the int8 file)."""
    return _size(p for p in Path(model_dir).iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))


def _percent_scale(metric: str) -> bool:
    return metric.split(".", 1)[0] in _PERCENT_METRICS


class Measure:
    """The validation split of a finished run, and how a model is scored on it (task metric, or perplexity for a
    pretraining run), with the examples per second."""

    def __init__(self, run: runs.Run, max_examples: int = 0):
        from llmctl import modeling

        self.run = run
        config = modeling.load_config(str(run.final))
        info = getattr(config, "llmctl", None) or {}
        self.task_name = info.get("task") if isinstance(info, dict) else None
        self.max_examples = max_examples
        if self.task_name in (None, "causal_lm"):
            self.task_name = "causal_lm"
            split = run.data / "validation"
            if not split.is_dir():
                raise CompressError(f"{run.root}: no validation split to measure on ({split} is missing)")
            from llmctl import data

            self.blocks = data.load_blocks(split)
            if max_examples:
                self.blocks = self.blocks.select(range(min(max_examples, len(self.blocks))))
            self.metric = "perplexity"
        else:
            from llmctl.taskdata import cached_validation

            split = cached_validation(run.root)
            if split is None:
                raise CompressError(f"{run.root}: no validation split recorded for this run")
            self.examples, self.where = split
            if max_examples:
                self.examples, self.where = self.examples[:max_examples], self.where[:max_examples]
            results = runs.read_json(run.results)
            self.metric = results.get("best_metric") or ""

    @property
    def count(self) -> int:
        return len(self.blocks) if self.task_name == "causal_lm" else len(self.examples)

    def load(self, model_dir: str):
        """The model of `model_dir` on CPU, as eval loads it."""
        from llmctl import evaluation, modeling

        if self.task_name == "causal_lm":
            from llmctl import tokenizer as tok_mod

            return modeling.load_causal_lm(model_dir).eval(), tok_mod.load(model_dir)
        return evaluation.load_model_dir(model_dir, device="cpu")

    def score(self, loaded) -> tuple[dict, float]:
        """(metrics, seconds of prediction) of a model from `load`."""
        if self.task_name == "causal_lm":
            return self._perplexity(*loaded)
        from llmctl import evaluation, recipe as recipe_mod

        task, spec, r = loaded.task, loaded.spec, loaded.recipe
        gen_cfg = r.generation if r is not None else recipe_mod.GenerationSection()
        eval_cfg = r.eval if r is not None else recipe_mod.EvalSection()
        settings = evaluation.generation_settings(gen_cfg, spec)
        names = evaluation.metric_names(task, eval_cfg.metrics)
        options = {**task.prediction_options(self.examples), "seed": r.seed if r is not None else 0}
        start = time.perf_counter()
        got = task.predict(loaded.model, self.examples, self.where, loaded.tokenizer, spec, settings, **options)
        seconds = time.perf_counter() - start
        metrics = task.score(names, got.items, self.examples, self.where, spec, task.metric_kwargs(eval_cfg, spec))
        return metrics, seconds

    def _perplexity(self, model, tokenizer) -> tuple[dict, float]:
        import torch
        from accelerate import Accelerator

        from llmctl import evaluation
        from llmctl.tasks import causal_lm

        accelerator = Accelerator(cpu=True)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        evaluate = evaluation.causal_lm_evaluator(accelerator, self.blocks, causal_lm.collator(pad), batch_size=8)
        start = time.perf_counter()
        with torch.no_grad():
            result = evaluate(model, final=True)
        return {"perplexity": result["perplexity"], "loss": result["loss"]}, time.perf_counter() - start


def _headline(metrics: dict, wanted: str) -> str | None:
    """The metric the run picked its best checkpoint by (a `metric.key` or a bare key), as it is in `metrics`."""
    if wanted in metrics:
        return wanted
    hits = [k for k in metrics if k.split(".", 1)[-1] == wanted and isinstance(metrics[k], (int, float))]
    if len(hits) == 1:
        return hits[0]
    numeric = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numeric[0] if numeric else None


def judge(report: dict) -> list[str]:
    """The targets missed, one line each: at least 2x smaller, faster, the metric within 1 point (0-100 scale)
    or 0.01 (0-1 scale); for perplexity, within 1%."""
    missed = []
    size = report["size_bytes"]
    if size["ratio"] < 2.0:
        missed.append(f"size: {size['ratio']:.2f}x smaller, the target is at least 2x")
    speed = report["examples_per_sec"]
    if speed["speedup"] is not None and speed["speedup"] <= 1.0:
        missed.append(f"speed: {speed['speedup']:.2f}x the examples/s of the fp32 model, the target is faster "
                      "(above 1x)")
    m = report["metric"]
    if m["name"] and m["before"] is not None and m["after"] is not None:
        if m["name"] == "perplexity":
            if m["after"] > m["before"] * 1.01:
                missed.append(f"perplexity: {m['before']:.4g} -> {m['after']:.4g}, more than 1% higher")
        elif m["before"] - m["after"] > m["tolerance"] + 1e-9:
            missed.append(f"{m['name']}: {m['before']:.4g} -> {m['after']:.4g}, more than {m['tolerance']:g} "
                          "below the fp32 model")
    return missed


def compress_run(run_dir: Path, to: Path, *, sparsity: float = 0.0, min_features: int = DEFAULT_MIN_FEATURES,
                 max_examples: int = 0, measure: bool = True, say=None) -> dict:
    """Compress a finished run's final/ into `to` and measure both on the run's validation split; returns the
    report (also written to `to`/compress-report.json)."""
    import torch

    from llmctl.card import CARD_NAME
    from llmctl.export_cli import _check_target

    say = say or (lambda *a: None)
    run = runs.Run(Path(run_dir))
    to = Path(to)
    if not run.root.is_dir():
        raise CompressError(f"{run.root}: no such run directory")
    if not run.is_complete():
        raise CompressError(f"{run.root}: not a finished run ({run.results.name} is missing)")
    if not (run.final / "config.json").is_file():
        raise CompressError(f"{run.root}: the finished run has no {run.final.name}/ model")
    if is_compressed(run.final):
        raise CompressError(f"{run.final}: already int8")
    if not 0.0 <= sparsity < 1.0:
        raise CompressError(f"--sparsity {sparsity}: must be at least 0 and below 1")
    _check_target(to)

    m = Measure(run, max_examples) if measure else None
    what = Measure(run, 1) if m is None else m
    torch.manual_seed(0)
    original = what.load(str(run.final))
    net = original[0] if isinstance(original, tuple) else original.model
    before = after = None
    if m is not None:
        say(f"compress: scoring the fp32 model on {m.count:,} validation examples")
        before = m.score(original)
    achieved = prune_(net, sparsity) if sparsity else None

    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.compress-{os.getpid()}.tmp")
    runs.remove(tmp)
    try:
        tmp.mkdir()
        for f in run.final.iterdir():
            if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and not f.name.endswith(".index.json"):
                shutil.copy2(f, tmp / f.name)
        manifest = save_int8(net, tmp, min_features=min_features, sparsity=sparsity)
        del original, net
        if m is not None:
            say("compress: loading the int8 model back and scoring it")
            after = m.score(m.load(str(tmp)))
        else:
            what.load(str(tmp))  # the round trip: it loads
        report = _report(run, to, m, manifest, before, after, weight_bytes(run.final), weight_bytes(tmp),
                         _size(run.final.iterdir()), achieved)
        runs.write_json(tmp / REPORT, report)
        card = tmp / CARD_NAME
        if card.is_file():
            card.write_text(card.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + _card_section(report),
                            encoding="utf-8")
        report["dir_bytes"]["after"] = _size(tmp.iterdir())
        _check_target(to)
        if to.is_dir():
            to.rmdir()
        tmp.rename(to)
    except BaseException:
        runs.remove(tmp)
        raise
    return report


def _report(run, to, m, manifest, before, after, size_before, size_after, dir_before, achieved) -> dict:
    quantized = [n for n, i in manifest["modules"].items()]
    int8_compute = [n for n, i in manifest["modules"].items() if i["compute"] == "int8"]
    report = {
        "run": str(run.root), "to": str(to), "task": m.task_name if m else None,
        "method": "int8 weights per output row; dynamic int8 activations per row (torch._int_mm) in linear "
                  f"layers with >= {manifest['min_features']} input features",
        "linear_layers": len(quantized), "int8_compute_layers": len(int8_compute),
        "sparsity": manifest["sparsity"], "achieved_sparsity": achieved,
        "threads": _threads(), "examples": m.count if m else None,
        "size_bytes": {"before": size_before, "after": size_after,
                       "ratio": round(size_before / size_after, 3) if size_after else None},
        "dir_bytes": {"before": dir_before, "after": None},
    }
    if m is None:
        report.update(examples_per_sec={"before": None, "after": None, "speedup": None},
                      metric={"name": None, "before": None, "after": None, "delta": None, "tolerance": None},
                      metrics_before=None, metrics_after=None, measured=False)
    else:
        (mb, sb), (ma, sa) = before, after
        name = "perplexity" if m.task_name == "causal_lm" else _headline(mb, m.metric)
        eps_b, eps_a = m.count / sb if sb else None, m.count / sa if sa else None
        vb, va = (mb.get(name), ma.get(name)) if name else (None, None)
        tolerance = None if name in (None, "perplexity") else (1.0 if _percent_scale(name) else 0.01)
        report.update(
            examples_per_sec={"before": _r(eps_b), "after": _r(eps_a),
                              "speedup": round(eps_a / eps_b, 3) if eps_a and eps_b else None},
            metric={"name": name, "before": _r(vb), "after": _r(va),
                    "delta": _r(va - vb) if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None,
                    "tolerance": tolerance},
            metrics_before={k: _r(v) for k, v in mb.items() if isinstance(v, (int, float))},
            metrics_after={k: _r(v) for k, v in ma.items() if isinstance(v, (int, float))},
            measured=True)
    report["missed_targets"] = judge(report) if m is not None else []
    return report


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _r(v):
    return round(float(v), 5) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _card_section(report: dict) -> str:
    lines = ["## Compressed (int8) with llmctl", "",
             f"`llmctl compress {report['run']}` made this folder: {report['method']}. It loads with llmctl "
             f"(`llmctl eval/summarize/generate/serve --model`), not with transformers alone: the weights are in "
             f"`{WEIGHTS}`, described by `{MANIFEST}`. Figures on the run's validation split: `{REPORT}`.", ""]
    s = report["size_bytes"]
    lines.append(f"- weights: {s['before']:,} -> {s['after']:,} bytes ({s['ratio']}x smaller)")
    if report.get("measured"):
        e, m = report["examples_per_sec"], report["metric"]
        lines.append(f"- examples/s: {e['before']} -> {e['after']} ({e['speedup']}x)")
        lines.append(f"- {m['name']}: {m['before']} -> {m['after']}")
    for miss in report["missed_targets"]:
        lines.append(f"- target missed: {miss}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- command


def compress(
    run: Annotated[Path, typer.Argument(help="A finished run directory (it holds results.json).",
                                        show_default=False)],
    to: Annotated[Path, typer.Option("--to", help="The directory to create; it must not exist or be empty.",
                                     show_default=False)],
    sparsity: Annotated[float, typer.Option("--sparsity", min=0.0, max=0.99,
                                            help="Zero this fraction of each linear layer's smallest weights "
                                                 "before quantizing (magnitude pruning).")] = 0.0,
    min_features: Annotated[int, typer.Option("--min-features", min=1,
                                              help="Linear layers with at least this many input features run in "
                                                   "int8; smaller ones are int8 on disk and fp32 at run time.")]
    = DEFAULT_MIN_FEATURES,
    max_examples: Annotated[int, typer.Option("--max-examples", min=0,
                                              help="Measure on the first N validation examples (0: all).")] = 0,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Only compress; do not score either model.")]
    = False,
):
    """Make an int8 copy of a finished run's model for CPU inference, and measure it against the original.

    Reports, on the run's validation split: weights on disk before/after, examples/s before/after and the task
    metric before/after; says which target (2x smaller, faster, metric within 1 point of 100 or 0.01 of 1) is
    missed. The folder loads with `llmctl eval`, `summarize`, `generate` and `serve`. [bold]Examples:[/]

        llmctl compress runs/summarization --to deploy/summarizer
        llmctl compress runs/classification --to deploy/cls --sparsity 0.3
    """
    from rich.console import Console

    console = Console(highlight=False)
    report = compress_run(run, to, sparsity=sparsity, min_features=min_features, max_examples=max_examples,
                          measure=not no_measure, say=lambda msg: console.print(msg, markup=False))
    print_report(report, console)


def print_report(report: dict, console) -> None:
    from rich.table import Table

    from llmctl.export_cli import _size as human

    console.quiet = False
    table = Table(title=f"compress: {report['run']} -> {report['to']}")
    for col in ("", "fp32", "int8", "change"):
        table.add_column(col, justify="right" if col else "left")
    s = report["size_bytes"]
    table.add_row("weights on disk", human(s["before"]), human(s["after"]), f"{s['ratio']}x smaller")
    if report.get("measured"):
        e, m = report["examples_per_sec"], report["metric"]
        table.add_row(f"examples/s ({report['examples']:,} examples)", f"{e['before']:.2f}", f"{e['after']:.2f}",
                      f"{e['speedup']}x")
        if m["name"]:
            table.add_row(m["name"], f"{m['before']:.4f}", f"{m['after']:.4f}", f"{m['delta']:+.4f}")
    console.print(table)
    console.print(f"{report['linear_layers']} linear layers in int8 ({report['int8_compute_layers']} computed in "
                  f"int8); report: {Path(report['to']) / REPORT}", markup=False)
    for miss in report["missed_targets"]:
        console.print(f"[yellow]target missed:[/] {miss}", soft_wrap=True)
