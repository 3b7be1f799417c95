"""`common/` is pure: importing any of its modules starts no process and changes no environment variable."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Third-party libraries are imported first: what they do at import (peft sets TORCHINDUCTOR_CACHE_DIR)
# is theirs; the probe looks at what importing Silo's own modules does after them.
PROBE = """
import os, pkgutil, subprocess, importlib
import numpy, torch, peft, transformers, flwr, cryptography
import common

def refuse(*args, **kwargs):
    raise AssertionError(f"a process was started at import: {args[:1]}")

subprocess.Popen = refuse  # every subprocess.run / check_output goes through Popen
os.system = refuse
before = dict(os.environ)
names = sorted(m.name for m in pkgutil.walk_packages(common.__path__, "common."))
for name in names:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(len(names), changed)
"""


def test_importing_every_common_module_starts_no_process_and_sets_no_environment():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, changed = out.stdout.split(" ", 1)
    assert int(count) >= 20  # the probe really walked the package
    assert changed.strip() == "[]"
