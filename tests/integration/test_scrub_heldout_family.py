"""bench/scrub_heldout.py: the held-out family is the same records for a seed in every process, whatever the
process's hash seed (its figures are compared across runs and commits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIGEST = """
import hashlib, json
from bench.scrub_heldout import make_heldout_records
records = make_heldout_records(120, seed=2026)
rows = [(r.text, [(s.start, s.end, s.entity_type) for s in r.spans]) for r in records]
print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())
"""


def _digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", DIGEST], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def test_heldout_family_is_the_same_under_any_hash_seed():
    # Italian towns come from a set inside Faker: before sorting them, seeds 0 and 1 gave different records.
    assert _digest("0") == _digest("1")
