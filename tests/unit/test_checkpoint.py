"""Checkpoints hold no pickles: a checkpoint file replaced by a malicious pickle (with its checksum updated, as an
attacker with write access would) is refused with a CheckpointError and its code never runs; pickles that older
formats used, planted beside the real files, are never opened. Save/load round-trips model, optimizer and RNG."""

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from llmctl import checkpoint, runs


class Payload:
    """Unpickling this object runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture()
def saved(tmp_path):
    from accelerate import Accelerator
    from transformers import GPT2Config, GPT2LMHeadModel

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(0, 50, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    run = runs.Run(tmp_path / "run")
    state = {"step": 1, "tokens_seen": 16, "seconds": 0.5, "best": None}
    random.seed(3)
    np.random.seed(4)
    path = checkpoint.save(accelerator, model, optimizer, run, state, keep=2, process={"window": {"steps": 1}})
    draws = (torch.rand(3), random.random(), float(np.random.rand()))
    return accelerator, model, optimizer, path, draws


def fresh(accelerator):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return accelerator.prepare(model, optimizer)


def rehash(path: Path, name: str) -> None:
    manifest = json.loads((path / checkpoint.MANIFEST).read_text())
    f = path / name
    manifest["files"][name] = {"sha256": checkpoint.sha256(f), "bytes": f.stat().st_size}
    (path / checkpoint.MANIFEST).write_text(json.dumps(manifest))


def test_round_trip_restores_weights_optimizer_rng_and_process_state(saved):
    accelerator, model, optimizer, path, draws = saved
    assert checkpoint.verify(path) is None
    assert not any(p.suffix in (".pkl", ".bin", ".pt") for p in path.iterdir())
    model2, optimizer2 = fresh(accelerator)
    state, own = checkpoint.load(accelerator, model2, optimizer2, path)
    assert state["step"] == 1 and own == {"window": {"steps": 1}}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    s1, s2 = optimizer.state_dict()["state"], optimizer2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for name in s1[i]:
            assert torch.equal(torch.as_tensor(s1[i][name]), torch.as_tensor(s2[i][name])), (i, name)
    assert optimizer2.state_dict()["param_groups"][0]["betas"] == optimizer.state_dict()["param_groups"][0]["betas"]
    # The RNG states are those at the save: the same draws follow.
    assert torch.equal(torch.rand(3), draws[0]) and random.random() == draws[1]
    assert float(np.random.rand()) == draws[2]


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "optimizer.json",
                                  "process-0.json", "process-0.safetensors", "trainer_state.json"])
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_malicious_pickle_in_any_checkpoint_file_is_refused_and_never_run(saved, name, how, tmp_path):
    accelerator, _, _, path, _ = saved
    marker = tmp_path / "code-ran"
    target = path / name
    if how == "pickle":
        target.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"state": Payload(marker)}, target)
    rehash(path, name)  # the attacker also fixes the checksum
    assert checkpoint.verify(path) is None
    model2, optimizer2 = fresh(accelerator)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(accelerator, model2, optimizer2, path)
    assert name in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists(), "the pickle's code ran"


def test_the_manifest_itself_as_a_pickle_is_refused(saved, tmp_path):
    _, _, _, path, _ = saved
    marker = tmp_path / "code-ran"
    (path / checkpoint.MANIFEST).write_bytes(pickle.dumps(Payload(marker)))
    assert "damaged" in checkpoint.verify(path)
    assert not marker.exists()


def test_pickles_of_older_formats_planted_beside_the_files_are_never_opened(saved, tmp_path):
    accelerator, _, _, path, _ = saved
    marker = tmp_path / "code-ran"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "scheduler.bin", "optimizer.bin",
                 "pytorch_model.bin"):
        torch.save({"x": Payload(marker)}, path / name)
        rehash(path, name)
    model2, optimizer2 = fresh(accelerator)
    state, _ = checkpoint.load(accelerator, model2, optimizer2, path)
    assert state["step"] == 1 and not marker.exists()


def test_a_checkpoint_in_the_old_pickled_format_is_named_as_such(tmp_path):
    old = tmp_path / "step-10"
    old.mkdir()
    (old / "trainer_state.json").write_text('{"step": 10}')
    torch.save({"last_epoch": 10}, old / "custom_checkpoint_0.pkl")
    assert "stores pickles" in checkpoint.verify(old)


def test_recipe_changes_allow_only_what_extends_or_reports():
    old = {"seed": 1, "train": {"lr": 1e-3, "max_steps": 10, "log_every": 5}, "model": {"config": {"a": 1}},
           "eval": {"patience": 0}}
    new = {"seed": 1, "train": {"lr": 1e-3, "max_steps": 20, "log_every": 2}, "model": {"config": {"a": 1}},
           "eval": {"patience": 3}}
    assert checkpoint.recipe_changes(old, new) == []
    new["train"]["lr"] = 2e-3
    new["model"]["config"]["a"] = 2
    new["seed"] = 2
    assert checkpoint.recipe_changes(old, new) == ["model.config.a", "seed", "train.lr"]


def test_resume_skips_a_damaged_newest_checkpoint_for_the_one_before(saved):
    accelerator, model, optimizer, first, _ = saved
    run = runs.Run(first.parents[1])
    state = {"step": 2, "tokens_seen": 32, "seconds": 1.0, "best": None}
    newest = checkpoint.save(accelerator, model, optimizer, run, state, keep=2, process={})
    assert [p.name for _, p in run.list_checkpoints()] == ["step-1", "step-2"]
    blob = newest / "optimizer.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    warnings = []
    assert checkpoint.resumable(run, warnings.append) == (1, first)
    assert len(warnings) == 1 and "step-2" in warnings[0] and "optimizer.safetensors does not match its checksum" \
        in warnings[0]
    # Both damaged: one line naming each, no fallback to a fresh start.
    (first / "trainer_state.json").write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint can be resumed") as err:
        checkpoint.resumable(run, None)
    assert "step-1" in str(err.value) and "step-2" in str(err.value) and "\n" not in str(err.value)


def test_pruning_keeps_the_newest_checkpoints_and_never_a_half_one(saved):
    accelerator, model, optimizer, first, _ = saved
    run = runs.Run(first.parents[1])
    (run.checkpoints / ".tmp-step-9").mkdir()  # a save killed half-way
    for step in (2, 3):
        checkpoint.save(accelerator, model, optimizer, run, {"step": step, "tokens_seen": 0, "seconds": 0.0,
                                                               "best": None}, keep=2, process={})
    assert [p.name for _, p in run.list_checkpoints()] == ["step-2", "step-3"]
    checkpoint.clean_temporary(run)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-2", "step-3"]
