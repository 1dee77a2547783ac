"""`llmctl serve` end to end on 127.0.0.1 with a real HTTP client (httpx): each endpoint, each error, concurrent
clients whose answers equal `summarize` / `eval`, a small load test (requests/s and p50/p99 printed, never
asserted), and the SIGTERM drain. The tiny runs come from test_compress.tiny_run (trained once per session)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, cli, perturb
from test_compress import tiny_run


class Server:
    """`llmctl serve` in a child process on a free port of 127.0.0.1."""

    def __init__(self, model: Path, *options: str):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", str(model), "--port", "0", *options],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        found = re.search(r"on http://([\d.]+):(\d+)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line}{self.proc.stderr.read()}")
        self.url = f"http://{found.group(1)}:{found.group(2)}"
        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("serve did not answer /health")

    def post(self, path: str, body, **kw) -> httpx.Response:
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.url + path, content=content, headers={"content-type": "application/json"},
                          timeout=120, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def error_of(resp: httpx.Response, status: int, kind: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind and body["error"]["code"] == status
    assert "Traceback" not in resp.text
    return body["error"]["message"]


async def _concurrent(url: str, path: str, bodies: list[dict], clients: int) -> tuple[list, list[float]]:
    """POST every body with `clients` concurrent clients; (responses in order, latencies in seconds)."""
    results: list = [None] * len(bodies)
    latencies: list[float] = []
    queue = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while not queue.empty():
                i = queue.get_nowait()
                start = time.perf_counter()
                r = await c.post(path, json=bodies[i])
                latencies.append(time.perf_counter() - start)
                results[i] = r

    await asyncio.gather(*(client() for _ in range(clients)))
    return results, latencies


def validation_docs(run: Path, n: int) -> list[str]:
    from llmctl.taskdata import cached_validation

    examples, _ = cached_validation(run)
    return [ex["source"] for ex in examples[:n]]


@pytest.fixture(scope="module")
def summ(tmp_path_factory) -> Path:
    run = tiny_run(tmp_path_factory, "summarization")
    marker = run / "final" / ".perturbed"
    if not marker.exists():  # a 6-step model writes the same (empty) text for every input
        perturb(run / "final", 0.5)
        marker.write_text("")
    return run


@pytest.fixture(scope="module")
def server(summ):
    s = Server(summ, "--max-batch-size", "8", "--max-wait-ms", "20", "--max-body-bytes", "20000",
               "--max-new-tokens-cap", "128")  # above the model's own budget, which summarize uses
    yield s
    s.stop()


@pytest.fixture(scope="module")
def expected(summ, tmp_path_factory) -> dict[str, str]:
    """`llmctl summarize` of 16 validation documents: document -> summary."""
    docs = validation_docs(summ, 16)
    tmp = tmp_path_factory.mktemp("summarize")
    data = tmp / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "text": d}) + "\n" for i, d in enumerate(docs)),
                    encoding="utf-8")
    cli("summarize", "--model", str(summ / "final"), str(data), "-o", str(tmp / "out.jsonl"), check=True)
    rows = [json.loads(x) for x in (tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    return {docs[int(r["id"])]: r["summary"] for r in rows}


# ------------------------------------------------------------------------------------------------ endpoints


def test_health_and_models(server, summ):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["task"] == "summarization"
    models = httpx.get(server.url + "/v1/models").json()
    (entry,) = models["data"]
    results = json.loads((summ / "results.json").read_text())
    assert entry["id"] == summ.name and entry["task"] == "summarization" and entry["endpoint"] == "/v1/summarize"
    assert entry["metrics"] == {k: v for k, v in results["metrics"].items() if isinstance(v, (int, float))}


def test_concurrent_clients_get_what_summarize_gives(server, expected):
    """16 concurrent clients; every answer equals `llmctl summarize` for the same document; requests were
    batched. Requests/s and latency percentiles are printed (figures, not assertions)."""
    docs = list(expected) * 3
    start = time.perf_counter()
    responses, latencies = asyncio.run(_concurrent(server.url, "/v1/summarize", [{"text": d} for d in docs], 16))
    wall = time.perf_counter() - start
    for doc, r in zip(docs, responses):
        assert r.status_code == 200, r.text
        assert r.json()["summary"] == expected[doc]
    assert len(set(expected.values())) > 1  # the outputs differ, so equality means something
    health = httpx.get(server.url + "/health").json()
    assert health["largest_batch"] > 1
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload test: {len(docs)} requests, 16 clients: {len(docs) / wall:.1f} requests/s, "
          f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, largest batch {health['largest_batch']}")


def test_errors_are_json_and_the_server_keeps_serving(server, expected):
    doc = next(iter(expected))
    assert "Expecting" in error_of(server.post("/v1/summarize", b'{"text": '), 400, "invalid_json")
    error_of(server.post("/v1/summarize", b"\xff\xfe"), 400, "invalid_json")
    assert "missing field 'text'" in error_of(server.post("/v1/summarize", {"txt": doc}), 400, "invalid_request")
    error_of(server.post("/v1/summarize", [doc]), 400, "invalid_request")
    assert "use POST /v1/summarize" in error_of(server.post("/v1/classify", {"text": doc}), 400, "wrong_task")
    for path in ("/v1/translate", "/v1/qa", "/v1/completions"):
        error_of(server.post(path, {"text": doc}), 400, "wrong_task")
    assert "at most 128" in error_of(server.post("/v1/summarize", {"text": doc, "max_new_tokens": 129}), 400,
                                    "max_new_tokens_too_large")
    error_of(server.post("/v1/summarize", {"text": "x" * 30000}), 413, "body_too_large")
    error_of(httpx.get(server.url + "/v1/nothing"), 404, "not_found")
    ok = server.post("/v1/summarize", {"text": doc})
    assert ok.status_code == 200 and ok.json()["summary"] == expected[doc]
    small = server.post("/v1/summarize", {"text": doc, "max_new_tokens": 2}).json()
    assert small["capped"] in (True, False) and len(small["summary"]) <= len(expected[doc]) + 1 or small["capped"]


def test_limits_overload_timeout_and_long_input(summ, expected):
    """A server with a queue of 1, batches of 1 and a 1 ms timeout: a burst gets 503s and 504s, an input over the
    token limit a 413 (reject), and the server still answers /health afterwards."""
    tight = Server(summ, "--max-queue", "1", "--max-batch-size", "1", "--timeout", "0.001", "--long-input",
                   "reject", "--max-input-tokens", "8")
    try:
        msg = error_of(tight.post("/v1/summarize", {"text": next(iter(expected))}), 413, "input_too_long")
        assert "at most 8" in msg
        bodies = [{"text": "a b c"}] * 20
        responses, _ = asyncio.run(_concurrent(tight.url, "/v1/summarize", bodies, 20))
        codes = {r.status_code for r in responses}
        assert codes <= {503, 504} and 503 in codes and 504 in codes
        for r in responses:
            error_of(r, r.status_code, {503: "overloaded", 504: "timeout"}[r.status_code])
        assert httpx.get(tight.url + "/health").status_code == 200
    finally:
        tight.stop()


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "classification")


def test_classify_equals_eval(cls_run, tmp_path):
    proc = cli("eval", "--model", str(cls_run / "final"), "-o", str(tmp_path / "r.json"), check=True)
    rows = [json.loads(x) for x in (tmp_path / "r.predictions.jsonl").read_text().splitlines()][:24]
    s = Server(cls_run)
    try:
        responses, _ = asyncio.run(_concurrent(s.url, "/v1/classify", [{"text": r["text"]} for r in rows], 8))
        assert [r.json()["label"] for r in responses] == [row["prediction"] for row in rows]
        error_of(s.post("/v1/summarize", {"text": "x"}), 400, "wrong_task")
    finally:
        s.stop()
    assert proc.returncode == 0


@pytest.mark.slow
def test_qa_equals_eval(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory, "qa")
    cli("eval", "--model", str(run / "final"), "-o", str(tmp_path / "r.json"), check=True)
    rows = [json.loads(x) for x in (tmp_path / "r.predictions.jsonl").read_text().splitlines()][:16]
    from llmctl.taskdata import cached_validation

    examples = {ex["id"]: ex for ex in cached_validation(run)[0]}
    s = Server(run)
    try:
        bodies = [{"question": examples[r["id"]]["question"], "context": examples[r["id"]]["context"]} for r in rows]
        responses, _ = asyncio.run(_concurrent(s.url, "/v1/qa", bodies, 4))
        assert [r.json()["answer"] for r in responses] == [row["prediction"] for row in rows]
    finally:
        s.stop()


@pytest.mark.slow
def test_completions_openai_shape_equals_generate(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "pretrain")
    prompt = "The town of"
    want = cli("generate", "--model", str(run), "--prompt", prompt, "--max-new-tokens", "6", check=True).stdout
    s = Server(run)
    try:
        body = s.post("/v1/completions", {"model": run.name, "prompt": prompt, "max_tokens": 6}).json()
        assert body["object"] == "text_completion" and body["model"] == run.name
        (choice,) = body["choices"]
        assert choice["text"] == want.rstrip("\n") and choice["finish_reason"] in ("stop", "length")
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        error_of(s.post("/v1/completions", {"prompt": 3}), 400, "invalid_request")
    finally:
        s.stop()


# ------------------------------------------------------------------------------------- last: the SIGTERM drain


def test_sigterm_finishes_in_flight_requests_then_exits(server, expected):
    docs = list(expected)[:8]

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            tasks = [asyncio.create_task(c.post("/v1/summarize", json={"text": d})) for d in docs]
            while (await c.get("/health")).json()["in_flight"] < 1:  # at least one request is being answered
                await asyncio.sleep(0.005)
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    for doc, r in zip(docs, responses):
        assert r.status_code == 200, r.text
        assert r.json()["summary"] == expected[doc]
    code = server.proc.wait(60)
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM, 0)
    assert "serve: stopped" in server.proc.stderr.read()
    with pytest.raises(httpx.TransportError):  # no longer listening: new requests are refused
        httpx.get(server.url + "/health", timeout=5)


def test_shutdown_counts_read_as_english():
    from llmctl.serve import _count

    assert [_count(1, "request"), _count(2, "request"), _count(1, "batch"), _count(0, "batch")] == [
        "1 request", "2 requests", "1 batch", "0 batches"]
