"""`preprocess --shard I/K`: K independent jobs make the shards of one corpus, `pretrain` trains on them."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, cli

TINY = "recipes/tiny/pretrain.toml"
K = 3


def tiny_args(corpus, out, *extra):
    return [TINY, "--output-dir", str(out), "--set", f'data.train_files=["{corpus}"]', *extra]


def tokens(path):
    """Every token of a packed split, in order (blocks flattened; the collator's padding is never stored)."""
    import datasets

    return [t for block in datasets.load_from_disk(str(path))["input_ids"] for t in block]


def blocks(path):
    import datasets

    return datasets.load_from_disk(str(path))["input_ids"]


@pytest.fixture(scope="module")
def made(small_corpus, tmp_path_factory):
    """One unsharded run directory and one made by K shard jobs running side by side, as a Slurm array would."""
    base = tmp_path_factory.mktemp("shards")
    whole, sharded = base / "whole", base / "sharded"
    cli("preprocess", *tiny_args(small_corpus, whole), check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    jobs = [subprocess.Popen([sys.executable, "-m", "llmctl", "preprocess", *tiny_args(small_corpus, sharded),
                              "--shard", f"{i}/{K}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(1, K + 1)]
    outs = [job.communicate(timeout=300) for job in jobs]
    for i, (job, (out, err)) in enumerate(zip(jobs, outs), 1):
        assert job.returncode == 0, f"shard {i}/{K} exited {job.returncode}\n{out}\n{err}"
    return whole, sharded, outs


def test_shards_hold_exactly_the_unsharded_tokens(made):
    whole, sharded, _ = made
    shards = sharded / "data" / "shards"
    assert sorted(p.name for p in shards.iterdir() if not p.name.startswith(".")) == [f"{i}-of-{K}"
                                                                                       for i in range(1, K + 1)]
    assert not (sharded / "data" / "train").exists()
    joined = [t for i in range(1, K + 1) for t in tokens(shards / f"{i}-of-{K}" / "train")]
    assert joined == tokens(whole / "data" / "train")
    metas = [json.loads((shards / f"{i}-of-{K}" / "meta.json").read_text()) for i in range(1, K + 1)]
    unsharded = json.loads((whole / "data" / "meta.json").read_text())
    assert sum(m["train"]["tokens"] for m in metas) == unsharded["train"]["tokens"] == len(joined)
    assert sum(m["documents"]["train"] for m in metas) == unsharded["documents"]["train"]
    # Contiguous document ranges, sizes within one of each other; every block full but each shard's last.
    assert [m["shard"]["first_document"] for m in metas] == [0, metas[0]["documents"]["train"],
                                                             metas[0]["documents"]["train"] +
                                                             metas[1]["documents"]["train"]]
    assert max(m["documents"]["train"] for m in metas) - min(m["documents"]["train"] for m in metas) <= 1
    for i in range(1, K + 1):
        assert all(len(b) == 64 for b in blocks(shards / f"{i}-of-{K}" / "train")[:-1])
    assert len({m["key"] for m in metas}) == K and len({m["base_key"] for m in metas}) == 1


def test_validation_and_tokenizer_are_the_unsharded_ones(made):
    whole, sharded, _ = made
    # Shard 1 writes the validation split where an unsharded run has it (so `eval` finds it there too).
    assert blocks(sharded / "data" / "validation") == blocks(whole / "data" / "validation")
    meta = json.loads((sharded / "data" / "shards" / f"1-of-{K}" / "meta.json").read_text())
    assert meta["validation"] == json.loads((whole / "data" / "meta.json").read_text())["validation"]
    names = sorted(p.name for p in (whole / "tokenizer").iterdir())
    assert names == sorted(p.name for p in (sharded / "tokenizer").iterdir())
    for name in names:
        assert (whole / "tokenizer" / name).read_bytes() == (sharded / "tokenizer" / name).read_bytes(), name


def test_shard_rerun_is_a_cache_hit(made, small_corpus):
    _, sharded, _ = made
    again = cli("preprocess", *tiny_args(small_corpus, sharded), "--shard", f"2/{K}", check=True)
    assert "cache hit" in again.stdout and f"shard 2/{K}" in again.stdout


def test_pretrain_on_the_shards(made, small_corpus, tmp_path):
    whole, sharded, _ = made
    run = tmp_path / "run"
    shutil.copytree(sharded, run)
    cli("pretrain", *tiny_args(small_corpus, run), check=True)
    assert not (run / "data" / "train").exists(), "pretrain must train on the shards, not preprocess again"
    steps = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [5, 10, 15, 20]
    assert all(math.isfinite(r["loss"]) for r in steps) and steps[-1]["loss"] < steps[0]["loss"]
    results = json.loads((run / "results.json").read_text())
    assert results["val_perplexity"] < results["initial_val_perplexity"]
    # The shards' token counts add up to the unsharded split's: the same unigram baseline.
    unsharded = json.loads((whole / "data" / "meta.json").read_text())
    assert results["unigram_perplexity"] == pytest.approx(unsharded["unigram_perplexity"], rel=1e-9)


def test_two_processes_each_read_only_their_own_shards(made, small_corpus, tmp_path):
    """K=3 shards over 2 processes: process 0 trains on shard 1, process 1 on shards 2 and 3; both sample the
    smaller share per epoch, and the run learns."""
    _, sharded, _ = made
    run = tmp_path / "run"
    shutil.copytree(sharded, run)
    proc = cli("pretrain", *tiny_args(small_corpus, run), "--num-processes", "2", check=True)
    assert "2 process(es)" in proc.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["shards_by_process"] == [[f"1-of-{K}"], [f"2-of-{K}", f"3-of-{K}"]]
    steps = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert all(math.isfinite(r["loss"]) for r in steps) and steps[-1]["loss"] < steps[0]["loss"]
    assert results["val_perplexity"] < results["initial_val_perplexity"]


def test_process_shares_cover_every_shard_once(made):
    from llmctl import data, runs

    _, sharded, _ = made
    root = sharded / "data" / "shards"
    paths = tuple(root / f"{i}-of-{K}" / "train" for i in range(1, K + 1))
    prepared = data.Prepared(root, sharded / "data" / "validation", sharded / "tokenizer", meta={}, cached=True,
                             shards=paths)
    sizes = [runs.read_json(p.parent / "meta.json")["train"]["blocks"] for p in paths]
    assert data.process_share(prepared, 0, 1) is None  # one process reads the whole split
    assert data.process_share(prepared, 0, K + 1) is None  # fewer shards than processes: batches are split
    for world in range(2, K + 1):
        shares = [data.process_share(prepared, r, world) for r in range(world)]
        assert [p for s in shares for p in s.shards] == list(paths)
        assert all(s.blocks == sum(sizes[paths.index(p)] for p in s.shards) for s in shares)
        assert {s.smallest for s in shares} == {min(s.blocks for s in shares)}


def test_own_share_sampler_stays_in_its_data_and_draws_the_smallest_share():
    from llmctl.train import make_sampler

    a = make_sampler(10, seed=3, per_step_chunk=4, limit=7, stream=0)
    b = make_sampler(10, seed=3, per_step_chunk=4, limit=7, stream=1)
    first, other = list(a), list(b)
    assert len(first) == len(other) == 4 and len(set(first)) == 4 and all(0 <= i < 10 for i in first)
    assert first != other  # separate streams
    a.set_epoch(1)
    assert list(a) != first  # a new order every epoch, the same on every call
    a.set_epoch(0)
    assert list(a) == first


def test_missing_shards_are_named(made, small_corpus, tmp_path):
    _, sharded, _ = made
    run = tmp_path / "run"
    shutil.copytree(sharded, run)
    shutil.rmtree(run / "data" / "shards" / f"2-of-{K}")
    proc = cli("pretrain", *tiny_args(small_corpus, run))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert f"missing shard 2 of {K}" in lines[0] and f"--shard I/{K}" in lines[0]
    assert "Traceback" not in proc.stderr and not (run / "results.json").exists()
    # An incomplete shard (no meta.json: its job died) counts as missing too.
    (run / "data" / "shards" / f"3-of-{K}" / "meta.json").unlink()
    proc = cli("pretrain", *tiny_args(small_corpus, run))
    assert proc.returncode == 1 and f"missing shards 2-3 of {K}" in proc.stderr, proc.stderr


def test_shards_beside_an_unsharded_split_are_refused(made, small_corpus, tmp_path):
    whole, _, _ = made
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    proc = cli("preprocess", *tiny_args(small_corpus, run), "--shard", f"1/{K}")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "unsharded training split" in proc.stderr


@pytest.mark.parametrize("spec", ["3/2", "0/2", "a/b", "2", "1/0", "-1/2", "1/2/3", ""])
def test_bad_shard_is_a_usage_error(spec, tmp_path, small_corpus):
    proc = cli("preprocess", *tiny_args(small_corpus, tmp_path / "run"), "--shard", spec)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--shard" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_shard_ranges_cover_every_document_once():
    from llmctl.data import parse_shard, shard_range

    for n in (1, 2, 7, 100, 101):
        for k in range(1, min(n, 9) + 1):
            ranges = [shard_range(n, i, k) for i in range(1, k + 1)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    assert parse_shard("2/8") == (2, 8) and parse_shard(" 1 / 1 ") == (1, 1)
