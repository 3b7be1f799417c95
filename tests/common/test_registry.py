"""The site key registry (common/registry.py): what `silo keys` writes reads back checked."""

import json

import pytest

from common.errors import ConfigError
from common.registry import load_registry
from silo.keygen import create_keys


def test_load_registry_rejects_a_fingerprint_that_does_not_match(tmp_path):
    layout = create_keys(tmp_path, ["a"])
    registry = json.loads(layout.registry.read_text())
    registry["sites"]["a"]["fingerprint"] = "0" * 64
    layout.registry.write_text(json.dumps(registry))
    with pytest.raises(ConfigError, match="fingerprint .* does not match"):
        load_registry(layout.registry)
