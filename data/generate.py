#!/usr/bin/env python3
"""Regenerate the embedded data in this folder: `python data/generate.py` (or `make data`).

The generator itself is package data, llmctl/embedded/generate.py, so that an installed llmctl can produce the
same files into a user cache. This shim needs only Python >= 3.11 (no installed llmctl, no third-party
package): it imports the generator from this checkout and writes next to itself.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from llmctl.embedded import generate  # noqa: E402  (after the path is set)

if __name__ == "__main__":
    sys.exit(generate.main([HERE]))
