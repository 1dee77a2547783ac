"""`llmctl report`: curves as PNG and a self-contained HTML page, for one run and for two runs overlaid."""

import base64
import html
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser

import pytest

from conftest import cli
from llmctl import report

TINY_STEPS = ["--set", "train.max_steps=20", "--set", "train.eval_every=10", "--set", "train.log_every=5"]


@pytest.fixture(scope="module")
def two_runs(small_corpus, tmp_path_factory):
    """A tiny pretraining run and a tiny classification fine-tune, made once for the module."""
    base = tmp_path_factory.mktemp("report-runs")
    pre, cls = base / "pre", base / "cls"
    cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(pre), "--set", f'data.train_files=["{small_corpus}"]',
        *TINY_STEPS, check=True)
    cli("finetune", "recipes/tiny/classification.toml", "-o", str(cls), *TINY_STEPS, check=True)
    return pre, cls


def log_of(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def n_logged(run, key):
    return sum(1 for r in log_of(run) if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]))


def png_size(path):
    from matplotlib import image

    pixels = image.imread(str(path))  # raises on a file that is not a decodable PNG
    return pixels.shape[1], pixels.shape[0]


class Rows(HTMLParser):
    """The prediction rows of a report page: one {column: text} per <tr class="prediction ...">."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.row, self.cell = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "prediction" in (a.get("class") or "").split():
            self.row = {}
            self.rows.append(self.row)
        elif tag == "td" and self.row is not None:
            self.cell = a.get("class")
            self.row[self.cell] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.row is not None and self.cell is not None:
            self.row[self.cell] += data


def prediction_rows(page: str) -> list[dict]:
    parser = Rows()
    parser.feed(page)
    return parser.rows


def embedded_png(page: str) -> bytes:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(found) == 1
    return base64.b64decode(found[0])


def check_self_contained(page: str):
    for pattern in (r"https?://", r"<link\b", r"<script\b", r'src="(?!data:)', r"url\("):
        assert not re.search(pattern, page, re.IGNORECASE), pattern


# ------------------------------------------------------------------------------------------------- tests


def test_one_run_writes_png_and_html_next_to_the_run(two_runs):
    pre, _ = two_runs
    proc = cli("report", str(pre))
    assert proc.returncode == 0, proc.stderr
    png, page = pre / "report" / "report.png", pre / "report" / "report.html"
    assert str(png) in proc.stdout and str(page) in proc.stdout
    assert png_size(png) == report.FIG_SIZE_PX
    text = page.read_text(encoding="utf-8")
    assert embedded_png(text) == png.read_bytes()
    check_self_contained(text)
    recipe = (pre / "recipe.toml").read_text(encoding="utf-8")
    assert html.escape(recipe) in text and '<|endoftext|>' in recipe  # escaped, not raw markup
    results = json.loads((pre / "results.json").read_text())
    assert f"{results['unigram_perplexity']:,.4f}" in text and f"{results['val_perplexity']:,.4f}" in text
    assert prediction_rows(text) == []  # pretraining writes no predictions.jsonl


def test_curves_match_the_log(two_runs):
    for run in two_runs:
        log = log_of(run)
        c = report.curves(log)
        assert {"loss", "val_loss", "lr", "tokens_per_sec"} <= set(c)
        for key, points in c.items():
            assert key in ("loss", "val_loss", "lr", "tokens_per_sec") or key.startswith("val_")
            assert points == [(r["step"], float(r[key])) for r in log if key in r], key
        assert [s for s, _ in c["loss"]] == [5, 10, 15, 20]
        assert [s for s, _ in c["val_loss"]] == [0, 10, 20]  # step 0 holds only val_* values


def test_curves_skip_non_finite_values():
    log = [{"step": 0, "val_loss": float("nan")}, {"step": 5, "loss": 2.0, "lr": 1e-3},
           {"step": 10, "loss": float("inf"), "lr": 5e-4, "val_loss": 1.5, "val_rouge.rougeL": 0.25}]
    c = report.curves(log)
    assert c["loss"] == [(5, 2.0)] and c["lr"] == [(5, 1e-3), (10, 5e-4)]
    assert c["val_loss"] == [(10, 1.5)] and c["val_rouge.rougeL"] == [(10, 0.25)]
    assert "tokens_per_sec" not in c


def test_every_logged_point_is_plotted(two_runs, tmp_path):
    runs = [report.read_run(r) for r in two_runs]
    counts = report.write_png(runs, tmp_path / "curves.png")
    assert png_size(tmp_path / "curves.png") == report.FIG_SIZE_PX
    expected_panels = {"loss", "val_loss", "lr", "tokens_per_sec", "val_perplexity", "val_accuracy.accuracy",
                       "val_f1.f1"}
    assert set(counts) == expected_panels
    for panel, per_run in counts.items():
        logged = {r["name"]: n_logged(r["path"], panel) for r in runs}
        assert per_run == {name: n for name, n in logged.items() if n}, panel
    # Both runs on the shared axes, one of each in the task-metric panels.
    assert set(counts["loss"]) == {"pre", "cls"} and counts["loss"]["pre"] == 4
    assert set(counts["val_perplexity"]) == {"pre"} and set(counts["val_accuracy.accuracy"]) == {"cls"}


def test_fine_tuning_run_html_shows_predictions_next_to_references(two_runs):
    _, cls = two_runs
    proc = cli("report", str(cls / "final"))  # the final/ subdirectory names the run too
    assert proc.returncode == 0, proc.stderr
    page = (cls / "report" / "report.html").read_text(encoding="utf-8")
    preds = [json.loads(line) for line in (cls / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = prediction_rows(page)
    assert len(preds) > 20 and len(rows) == 20
    for row, pred in zip(rows, preds):
        assert row["prediction"] == pred["prediction"] and row["reference"] == pred["reference"]
        assert row["text"] == pred["text"] and row["where"] == pred["where"]
    results = json.loads((cls / "results.json").read_text())
    for table in ("metrics", "initial_metrics", "baseline_metrics"):
        assert f"{results[table]['accuracy.accuracy']:,.4f}" in page, table
    assert embedded_png(page) == (cls / "report" / "report.png").read_bytes()
    check_self_contained(page)


def test_fewer_predictions_than_the_sample_and_escaping(two_runs, tmp_path):
    _, cls = two_runs
    run = tmp_path / "few"
    run.mkdir()
    for name in ("log.jsonl", "results.json", "recipe.toml"):
        shutil.copy(cls / name, run / name)
    rows = [{"id": i, "text": f'<b>"row {i}" & co</b>', "prediction": "positive", "reference": "<neg>",
             "where": f"x.jsonl:{i + 1}"} for i in range(5)]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    proc = cli("report", str(run), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    got = prediction_rows(page)
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    assert [r["reference"] for r in got] == ["<neg>"] * 5
    assert "<b>" not in page and html.escape(rows[0]["text"]) in page


def test_two_runs_overlay_into_one_report(two_runs, tmp_path):
    pre, cls = two_runs
    proc = cli("report", str(pre), str(cls), cwd=tmp_path)  # several runs: ./report by default
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    assert png_size(out / "report.png") == report.FIG_SIZE_PX
    page = (out / "report.html").read_text(encoding="utf-8")
    assert embedded_png(page) == (out / "report.png").read_bytes()
    check_self_contained(page)
    assert page.count('<section class="run"') == 2
    for run in (pre, cls):
        assert html.escape((run / "recipe.toml").read_text(encoding="utf-8")) in page
    assert len(prediction_rows(page)) == 20  # only the fine-tuning run has predictions


def test_terminal_plot_of_a_known_log():
    from rich.console import Console

    log = [{"step": 0, "val_loss": 4.5}, {"step": 10, "loss": 4.0}, {"step": 20, "loss": 3.0},
           {"step": 30, "loss": 2.0, "val_loss": 2.5}, {"step": 40, "loss": 1.0}, {"step": 50, "loss": 0.0}]
    buf = io.StringIO()
    report.terminal_plot(log, Console(file=buf, width=200, color_system=None))
    lines = buf.getvalue().splitlines()
    assert lines == [
        "loss      4.0000 █▆▅▃▁ 0.0000  (min 0.0000, 5 points, steps 10-50)",
        "val_loss  4.5000 █▁ 2.5000  (min 2.5000, 2 points, steps 0-30)",
    ]
    assert report.sparkline([1.0, 1.0, 1.0]) == "▁▁▁"
    assert len(report.sparkline([float(i) for i in range(500)], width=40)) == 40
    buf = io.StringIO()
    report.terminal_plot([{"step": 0, "val_loss": 1.0}], Console(file=buf))
    assert buf.getvalue() == ""  # nothing trained yet: nothing printed


def test_missing_or_unstarted_run_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope"
    proc = cli("report", str(missing))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error:") and str(missing) in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("report", str(empty))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "no log.jsonl" in proc.stderr
