"""`llmctl report RUN [RUN ...]`: a run's curves as one PNG and a self-contained HTML page.

    report.png    train loss, validation loss, learning rate, tokens/s and one panel per task metric, every
                  run overlaid on the same axes (one marker per logged point)
    report.html   the PNG embedded, then per run: the resolved recipe, trained / untrained / baseline metrics
                  and a sample of predictions next to references

Everything here reads the run directory only (log.jsonl, results.json, recipe.toml, predictions.jsonl); nothing
heavy is imported at module level (matplotlib is imported inside `write_png`), so `llmctl --help` stays fast.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmctl import runs as runs_mod
from llmctl.runs import RunError

SAMPLE_ROWS = 20
BASE_PANELS = ("loss", "val_loss", "lr", "tokens_per_sec")
TITLES = {
    "loss": "training loss",
    "val_loss": "validation loss",
    "lr": "learning rate",
    "tokens_per_sec": "throughput (tokens/s)",
}
# Fields of an evaluation that are counts or settings, not measures of quality: logged, but not worth a panel.
_NOT_METRICS = ("tokens", "total", "thresh", "ref_len", "sys_len", "bp", "beta", "char_order", "word_order",
                "examples", "samples", "capped")
MAX_METRIC_PANELS = 8
FIG_SIZE_PX = (1400, 900)
DPI = 100
_BLOCKS = "▁▂▃▄▅▆▇█"


# ------------------------------------------------------------------------------------------------ reading


def resolve_run(path: Path) -> Path:
    """The run directory for a RUN argument: the directory itself, or the parent of its final/ (or best/)."""
    path = Path(path)
    if (path / "log.jsonl").is_file():
        return path
    if path.name in ("final", "best", "adapter") and (path.parent / "log.jsonl").is_file():
        return path.parent
    if not path.exists():
        raise RunError(f"{path}: no such run directory")
    if not path.is_dir():
        raise RunError(f"{path}: not a run directory")
    raise RunError(f"{path}: not a run directory, or the run has not started (no log.jsonl)")


def read_run(path: Path, n_predictions: int = SAMPLE_ROWS) -> dict:
    """What a report needs from one run directory: log records, results (empty for an unfinished run), the
    resolved recipe's text, and the first `n_predictions` rows of predictions.jsonl with the total count."""
    root = resolve_run(Path(path))
    log = runs_mod.read_log(root / "log.jsonl")
    if not log:
        raise RunError(f"{root / 'log.jsonl'}: no logged steps yet")
    results: dict = {}
    if (root / "results.json").is_file():
        try:
            results = runs_mod.read_json(root / "results.json")
        except (OSError, ValueError) as exc:
            raise RunError(f"{root / 'results.json'}: unreadable ({exc})") from None
    recipe_path = root / "recipe.toml"
    recipe = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else ""
    predictions, total = [], 0
    pred_path = root / "predictions.jsonl"
    if pred_path.is_file():
        with open(pred_path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                total += 1
                if len(predictions) < n_predictions:
                    try:
                        predictions.append(json.loads(line))
                    except json.JSONDecodeError:
                        total -= 1
    return {
        "name": root.name,
        "path": root,
        "log": log,
        "results": results,
        "finished": bool(results),
        "recipe": recipe,
        "predictions": predictions,
        "n_predictions": total,
    }


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def curves(log: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per logged point for loss, val_loss, lr, tokens_per_sec and every val_* field, in log
    order; missing and non-finite values are skipped (a key with no point at all is left out)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in log:
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        for key, value in record.items():
            if key not in BASE_PANELS and not key.startswith("val_"):
                continue
            v = _number(value)
            if v is not None:
                out.setdefault(key, []).append((step, v))
    return out


def is_metric_panel(key: str) -> bool:
    """A val_* field that measures quality (val_perplexity, val_rouge.rougeL, ...), not a count or a setting."""
    if not key.startswith("val_") or key == "val_loss":
        return False
    last = key[4:].rsplit(".", 1)[-1].lower()
    return not any(last == word or last.endswith("_" + word) for word in _NOT_METRICS)


def _primary_first(keys: list[str]) -> list[str]:
    """A metric's headline fields (f1, exact, score, rougeL, accuracy) before its breakdowns (HasAns_f1, ...)."""
    return sorted(keys, key=lambda k: "_" in k[4:].rsplit(".", 1)[-1])


def panels(all_curves: list[dict]) -> list[str]:
    """The panels of a report: the four base ones, then the task metrics, taken from the runs in turn (each
    run's headline metrics first) up to MAX_METRIC_PANELS, so that every run's metrics get a panel."""
    per_run = [_primary_first([k for k in c if is_metric_panel(k)]) for c in all_curves]
    metrics: list[str] = []
    depth = max((len(keys) for keys in per_run), default=0)
    for i in range(depth):
        for keys in per_run:
            if i < len(keys) and keys[i] not in metrics and len(metrics) < MAX_METRIC_PANELS:
                metrics.append(keys[i])
    return [*BASE_PANELS, *metrics]


def _title(key: str) -> str:
    if key in TITLES:
        return TITLES[key]
    name, _, field = key[4:].partition(".")
    return f"validation {name if field in ('', name) else f'{name} {field}'}"


# -------------------------------------------------------------------------------------------------- PNG


def write_png(runs: list[dict], path: Path) -> dict[str, dict[str, int]]:
    """Draw every run's curves into one figure (a grid of panels, runs overlaid) and save it as a PNG of
    FIG_SIZE_PX pixels. Returns the points actually drawn: {panel: {run name: number of points}}."""
    try:
        import matplotlib
    except ImportError:
        raise RunError("llmctl report needs matplotlib: pip install 'matplotlib>=3.7'") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    all_curves = [curves(r["log"]) for r in runs]
    keys = panels(all_curves)
    ncols = 3 if len(keys) <= 6 else 4
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(FIG_SIZE_PX[0] / DPI, FIG_SIZE_PX[1] / DPI), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    markers = "osD^vP*Xh<>p"
    counts: dict[str, dict[str, int]] = {}
    handles = {}
    for ax, key in zip(axes, keys):
        counts[key] = {}
        ys_all = []
        for i, (run, c) in enumerate(zip(runs, all_curves)):
            points = c.get(key)
            if not points:
                continue
            xs = [s for s, _ in points]
            ys = [v for _, v in points]
            ys_all += ys
            (line,) = ax.plot(xs, ys, color=colors[i], marker=markers[i % len(markers)], markersize=4,
                              linewidth=1.2, label=run["name"])
            handles.setdefault(run["name"], line)
            counts[key][run["name"]] = len(line.get_xdata())
        ax.set_title(_title(key), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if not ys_all:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif min(ys_all) > 0 and max(ys_all) / min(ys_all) > 100:
            ax.set_yscale("log")  # perplexity from ~vocabulary size down to single digits
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper center", ncol=min(len(handles), 6) or 1,
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    _write_bytes(Path(path), buf.getvalue())
    return counts


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a report is for sharing: the usual permissions, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1450px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
img.curves { width: 100%; max-width: 1400px; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .6em; overflow-x: auto; font-size: .85em; }
table.predictions td div, table.samples td div { white-space: pre-wrap; max-height: 12em; overflow-y: auto; max-width: 40em; }
tr.wrong td.prediction { background: #fdecea; }
.note { color: #666; font-size: .9em; }
"""


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.4f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def cell_text(v) -> str:
    """How a predictions.jsonl value is shown: strings as they are, anything else as JSON."""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def metric_rows(run: dict) -> list[tuple[str, object, object, object]]:
    """(metric, trained, untrained, baseline) for a run's results table."""
    res = run["results"]
    if isinstance(res.get("metrics"), dict):
        trained = res.get("metrics") or {}
        before = res.get("initial_metrics") or {}
        base = res.get("baseline_metrics") or {}
        keys = [k for k in trained if _number(trained[k]) is not None]
        keys += [k for k in (*before, *base) if k not in keys and k != "loss"
                 and (_number(before.get(k)) is not None or _number(base.get(k)) is not None)]
        rows = [(k, trained.get(k), before.get(k), base.get(k)) for k in keys]
        if "loss" in before:
            final_val = next((r["val_loss"] for r in reversed(run["log"]) if "val_loss" in r), None)
            rows.append(("validation loss", final_val, before.get("loss"), None))
        return rows
    # Pretraining: perplexity against the unigram baseline, and the validation loss.
    first = next((r for r in run["log"] if r.get("step") == 0 and "val_loss" in r), {})
    rows = []
    if any(k in res for k in ("val_perplexity", "initial_val_perplexity", "unigram_perplexity")):
        rows.append(("validation perplexity", res.get("val_perplexity"),
                     res.get("initial_val_perplexity", first.get("val_perplexity")), res.get("unigram_perplexity")))
    if "uniform_perplexity" in res:
        rows.append(("uniform perplexity (vocabulary size)", None, None, res.get("uniform_perplexity")))
    if "val_loss" in res or first:
        rows.append(("validation loss", res.get("val_loss"), first.get("val_loss"), None))
    return rows


_FACTS = ("task", "recipe", "model", "family", "parameters", "trainable_parameters", "lora", "precision", "steps",
          "stopped_early", "best_metric", "best_step", "world_size", "train_loss", "tokens_seen", "tokens_per_sec",
          "train_seconds", "wall_seconds", "validation_examples", "max_new_tokens", "capped_outputs",
          "perplexity_vs_unigram")


def _run_section(run: dict, index: int) -> str:
    e = html.escape
    res = run["results"]
    out = [f'<section class="run" id="run-{index}">', f"<h2>{e(run['name'])}</h2>",
           f'<p class="note">{e(str(run["path"]))}'
           + ("" if run["finished"] else " &mdash; unfinished: no results.json yet") + "</p>"]

    rows = metric_rows(run)
    out.append("<h3>Results</h3>")
    if rows:
        out.append('<table class="results"><tr><th>metric</th><th>trained</th><th>untrained (step 0)</th>'
                   "<th>baseline</th></tr>")
        for name, trained, before, base in rows:
            out.append(f"<tr><td>{e(name)}</td><td class=\"num\">{e(_fmt(trained))}</td>"
                       f"<td class=\"num\">{e(_fmt(before))}</td><td class=\"num\">{e(_fmt(base))}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="note">no results yet</p>')
    facts = [(k, res[k]) for k in _FACTS if res.get(k) is not None]
    if facts:
        out.append('<table class="facts">')
        for k, v in facts:
            cls = ' class="num"' if _number(v) is not None else ""
            out.append(f"<tr><th>{e(k)}</th><td{cls}>{e(_fmt(v))}</td></tr>")
        out.append("</table>")

    samples = res.get("samples") or []
    if samples:
        out.append("<h3>Samples</h3><table class=\"samples\"><tr><th>prompt</th><th>continuation</th></tr>")
        for s in samples:
            out.append(f"<tr><td><div>{e(cell_text(s.get('prompt', '')))}</div></td>"
                       f"<td><div>{e(cell_text(s.get('continuation', '')))}</div></td></tr>")
        out.append("</table>")

    preds = run["predictions"]
    if preds:
        out.append(f"<h3>Predictions</h3><p class=\"note\">the first {len(preds)} of {run['n_predictions']:,} "
                   "(predictions.jsonl), next to the references</p>")
        inputs: list[str] = []
        for row in preds:
            inputs += [k for k in row if k not in ("where", "id", "prediction", "reference") and k not in inputs]
        cols = [c for c in ("where", "id") if any(c in row for row in preds)] + inputs + ["prediction", "reference"]
        out.append('<table class="predictions"><tr>' + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        for row in preds:
            wrong = " wrong" if row.get("prediction") != row.get("reference") else ""
            cells = "".join(f'<td class="{e(c)}"><div>{e(cell_text(row[c])) if c in row else ""}</div></td>'
                            for c in cols)
            out.append(f'<tr class="prediction{wrong}">{cells}</tr>')
        out.append("</table>")

    out.append("<h3>Recipe (resolved)</h3>")
    out.append(f'<pre class="recipe">{e(run["recipe"])}</pre>' if run["recipe"] else '<p class="note">no recipe.toml</p>')
    out.append("</section>")
    return "\n".join(out)


def render_html(runs: list[dict], png_bytes: bytes) -> str:
    e = html.escape
    names = ", ".join(r["name"] for r in runs)
    data = base64.b64encode(png_bytes).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>llmctl report: {e(names)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>llmctl report: {e(names)}</h1>",
        f'<img class="curves" alt="training curves" src="data:image/png;base64,{data}">',
    ]
    parts += [_run_section(r, i) for i, r in enumerate(runs)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(runs: list[dict], path: Path, png_bytes: bytes) -> None:
    """One self-contained HTML file: the PNG inline as a data: URI, inline CSS, no external reference."""
    _write_bytes(Path(path), render_html(runs, png_bytes).encode("utf-8"))


# --------------------------------------------------------------------------------------------- terminal


def sparkline(values: list[float], width: int = 60) -> str:
    """Values as one line of block characters scaled between their min and max; more values than `width` are
    averaged in `width` consecutive buckets."""
    if not values:
        return ""
    if len(values) > width:
        n = len(values)
        values = [sum(values[i * n // width:(i + 1) * n // width]) / ((i + 1) * n // width - i * n // width)
                  for i in range(width)]
    lo, hi = min(values), max(values)
    if hi == lo:
        return _BLOCKS[0] * len(values)
    top = len(_BLOCKS) - 1
    return "".join(_BLOCKS[int((v - lo) / (hi - lo) * top + 0.5)] for v in values)


def terminal_plot(log: list[dict], console, width: int = 60) -> None:
    """A compact plot of the loss curves for the end of training: one line per curve, e.g.

        loss      6.1499 ▇▅▃▁ 5.4730  (min 5.4730, 4 points, steps 5-20)
    """
    c = curves(log)
    lines = []
    for key, label in (("loss", "loss"), ("val_loss", "val_loss")):
        points = c.get(key) or []
        if not points or (key == "val_loss" and len(points) < 2):
            continue
        ys = [v for _, v in points]
        lines.append(f"{label:<9} {ys[0]:.4f} {sparkline(ys, width)} {ys[-1]:.4f}  (min {min(ys):.4f}, "
                     f"{len(ys)} points, steps {points[0][0]}-{points[-1][0]})")
    if not lines:
        return
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------- command


def _unique_names(loaded: list[dict]) -> None:
    names = [r["name"] for r in loaded]
    if len(set(names)) < len(names):
        for r in loaded:
            r["name"] = str(r["path"])
        names = [r["name"] for r in loaded]
        for i, r in enumerate(loaded):
            if names.count(r["name"]) > 1:
                r["name"] = f"{r['name']} #{i + 1}"


def command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or their final/), one or more.",
                                               show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for report.png and "
                                                   "report.html \\[default: RUN/report for one run, ./report "
                                                   "for several].", show_default=False)] = None,
) -> None:
    """Plot runs' loss, validation loss, learning rate, throughput and task metrics, and write an HTML report.

    Writes report.png (several runs overlaid on the same axes) and report.html (the figure embedded, the
    resolved recipe, trained / untrained / baseline metrics and a sample of predictions). [bold]Examples:[/]

        llmctl report runs/gpt-small
        llmctl report runs/summarization runs/lifecycle -o compare/
    """
    from rich.console import Console

    loaded = [read_run(p) for p in runs]
    _unique_names(loaded)
    out = output if output is not None else (loaded[0]["path"] / "report" if len(loaded) == 1 else Path("report"))
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a directory")
    png, page = out / "report.png", out / "report.html"
    try:
        write_png(loaded, png)
        write_html(loaded, page, png.read_bytes())
    except OSError as exc:
        raise RunError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    console = Console(highlight=False)
    console.print(f"report: {png}", markup=False, soft_wrap=True)
    console.print(f"report: {page}", markup=False, soft_wrap=True)
