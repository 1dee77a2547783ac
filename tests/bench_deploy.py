"""Deployment benchmarks: `llmctl compress` (size, speed, metric) and `llmctl serve` (dynamic batching against one
request at a time at 16 concurrent clients). Figures are printed, never asserted.

    python tests/bench_deploy.py            # both, a few minutes on 2 CPU cores
    python tests/bench_deploy.py serve      # one of: compress, serve

tests/bench.py calls bench_compress() and bench_serve().
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import row

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
CLIENTS = 16
REQUESTS = 96



def _llmctl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"llmctl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def _train(tmp: Path, recipe: str, *sets: str) -> Path:
    run = tmp / Path(recipe).stem
    _llmctl("finetune", recipe, "-o", str(run), *[a for s in sets for a in ("--set", s)])
    return run


def bench_compress() -> None:
    """Compress a trained run of the shipped classification recipe (MiniLM-L6, 22.7M parameters, 150 steps would
    take minutes: 40 steps here) and of the tiny summarization preset; print the report's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for recipe, sets in (("recipes/classification.toml", ("train.max_steps=40", "train.eval_every=1000")),
                             ("recipes/tiny/summarization.toml", ())):
            run = _train(tmp, recipe, *sets)
            out = tmp / f"{run.name}-int8"
            _llmctl("compress", str(run), "--to", str(out))
            r = json.loads((out / "compress-report.json").read_text())
            name = Path(recipe).stem if "tiny" not in recipe else "tiny/" + Path(recipe).stem
            s, e, m = r["size_bytes"], r["examples_per_sec"], r["metric"]
            row(f"compress {name}: weights", f"{s['before'] / 2**20:.2f} -> {s['after'] / 2**20:.2f} MiB",
                f"{s['ratio']:.2f}x smaller (target >= 2x)")
            row(f"compress {name}: examples/s", f"{e['before']:.1f} -> {e['after']:.1f}",
                f"{e['speedup']:.2f}x on {r['examples']} validation examples, {r['int8_compute_layers']} of "
                f"{r['linear_layers']} layers in int8")
            row(f"compress {name}: {m['name']}", f"{m['before']:.4f} -> {m['after']:.4f}",
                f"delta {m['delta']:+.4f} (tolerance {m['tolerance']})")
            for miss in r["missed_targets"]:
                row("  target missed", "", miss)


def _start(model: Path, *options: str):
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", str(model), "--port", "0", *options],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"on (http://[\d.]+:\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"serve did not start: {line}")
    return proc, found.group(1)


async def _load(url: str, path: str, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    import httpx

    todo = list(range(len(bodies)))
    latencies: list[float] = []

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            for _ in range(30):
                try:
                    if (await c.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            while todo:
                i = todo.pop()
                start = time.perf_counter()
                r = await c.post(path, json=bodies[i])
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies


def bench_serve() -> None:
    """The tiny summarization preset served with dynamic batching (batches of up to 16) and with one request at
    a time (--max-batch-size 1), 16 concurrent clients, the same 96 validation documents."""
    sys.path.insert(0, str(ROOT))
    from llmctl.taskdata import cached_validation

    with tempfile.TemporaryDirectory() as tmp:
        run = _train(Path(tmp), "recipes/tiny/summarization.toml")
        docs = [ex["source"] for ex in cached_validation(run)[0]]
        bodies = [{"text": docs[i % len(docs)]} for i in range(REQUESTS)]
        rates = {}
        for label, options in (("dynamic batching (<= 16)", ("--max-batch-size", "16")),
                               ("one request at a time", ("--max-batch-size", "1"))):
            proc, url = _start(run / "final", *options)
            try:
                wall, lat = asyncio.run(_load(url, "/v1/summarize", bodies, CLIENTS))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            q = statistics.quantiles(lat, n=100)
            rates[label] = len(bodies) / wall
            row(f"serve, {label}", f"{rates[label]:.1f} req/s",
                f"{CLIENTS} clients, {REQUESTS} requests; p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
        ratio = rates["dynamic batching (<= 16)"] / rates["one request at a time"]
        row("serve, batching speed-up", f"{ratio:.2f}x", "target >= 3x")


def main() -> None:
    which = sys.argv[1:] or ["compress", "serve"]
    for name in which:
        {"compress": bench_compress, "serve": bench_serve}[name]()


if __name__ == "__main__":
    main()
