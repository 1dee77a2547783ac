"""llmctl.allocator: freed tensor memory is reused instead of being faulted in again (counted in page faults, a
property of the process, not a timing)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from llmctl import allocator

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")

# A child process: training steps of a small GPT-2 (its logits 64 MiB), and the page faults per step once warm.
CHILD = """
import json, resource
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from llmctl import allocator
kept = allocator.keep_freed_memory()
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_layer=1, n_embd=64, n_head=2, n_positions=256))
ids = torch.randint(0, 8192, (8, 256))
def step():
    model(input_ids=ids, labels=ids).loss.backward()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
start = faults()
for _ in range(4):
    step()
print(json.dumps({"kept": kept, "faults": (faults() - start) / 4}))
"""


KEPT_ONLY = "import json; from llmctl import allocator; print(json.dumps({'kept': allocator.keep_freed_memory()}))"


def _child(code: str = CHILD, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.OFF_SWITCH}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_not_faulted_in_again():
    default = _child(**{allocator.OFF_SWITCH: "0"})
    kept = _child()
    assert default["kept"] is None and kept["kept"]
    logits = 8 * 256 * 8192 * 4 // os.sysconf("SC_PAGE_SIZE")  # pages of one step's logits
    assert default["faults"] > logits  # glibc gives the large blocks back to the kernel between steps
    assert kept["faults"] < default["faults"] / 4  # 65,000 against 1 to 4,100 pages per step, measured


def test_the_users_malloc_settings_are_left_alone():
    assert _child(KEPT_ONLY)["kept"]
    assert _child(KEPT_ONLY, MALLOC_TRIM_THRESHOLD_="131072")["kept"] is None
    assert _child(KEPT_ONLY, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")["kept"] is None
    assert _child(KEPT_ONLY, LD_PRELOAD="libjemalloc.so.2")["kept"] is None
    assert _child(KEPT_ONLY, **{allocator.OFF_SWITCH: "off"})["kept"] is None
