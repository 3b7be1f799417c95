"""Fixtures shared by the site's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The least a site TOML needs to load (a fixed noise multiplier, so no planning inputs).
MINIMAL_SITE_TOML = """
[site]
id = "s-a"
{app}

[model]
base = "tiny"

[privacy]
noise_multiplier = 1.0
max_grad_norm = 1.0
budget_epsilon = 10.0
budget_delta = 1e-5
"""


@pytest.fixture
def write_site_toml(tmp_path: Path):
    """`write_site_toml(site_lines="")` writes tmp_path/site.toml, with extra `[site]` lines, and returns its path."""

    def write(site_lines: str = "") -> Path:
        path = tmp_path / "site.toml"
        path.write_text(MINIMAL_SITE_TOML.format(app=site_lines))
        return path

    return write
