"""The `silo` command as a user meets it: one clear line and a documented exit code for a mistake,
never a traceback, and nothing half-written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import EXIT_CODES, ConfigError, DataError
from silo.cli import main
from silo.demo import DemoLayout, write_federation, write_site
from tests.fixtures import cli


def _silo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "silo", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _site(tmp_path: Path, records: list[dict]) -> Path:
    return write_site(DemoLayout(tmp_path), "site-a", records, base_model="base", rounds=1)


def _plain(text: str) -> str:
    """Help text without Rich's panel borders and line wrapping: the words, one space apart."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def test_silo_help_lists_every_exit_code() -> None:
    out = _silo("--help")
    assert out.returncode == 0
    shown = _plain(out.stdout)
    for code, text in EXIT_CODES.items():
        assert f" {code} {_plain(text)}" in shown


def test_silo_help_lists_the_run_control_commands() -> None:
    shown = _plain(_silo("--help").stdout)
    assert "federation run, follow, list and stop runs at a SuperLink (run | status | list | logs | stop)" in shown
    listed = _plain(_silo("federation", "--help").stdout)
    assert all(f" {action} " in listed for action in ("run", "status", "list", "logs", "stop"))


def test_every_commands_help_shows_an_example_of_itself(capsys: pytest.CaptureFixture[str]) -> None:
    commands = cli.leaf_commands()
    assert len(commands) >= 20
    for name, _command in commands:
        assert main([*name.split()[1:], "--help"]) == 0
        examples = capsys.readouterr().out.partition("examples:")[2]
        assert f"{name} " in examples or examples.rstrip().endswith(name), f"`{name} --help` shows no example of itself"


def test_site_check_bad_config_value_is_one_line_naming_field_and_value(tmp_path: Path) -> None:
    cfg = _site(tmp_path, [{"text": "hello"}] * 10)
    cfg.write_text(cfg.read_text().replace("r = 8", "r = 0"))
    out = _silo("site", "check", "--config", str(cfg))
    assert out.returncode == ConfigError.exit_code
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "`lora.r` must be > 0, got 0" in out.stderr


def test_site_check_malformed_record_names_file_and_line(tmp_path: Path) -> None:
    cfg = _site(tmp_path, [{"text": "a note"}] * 5)
    data = cfg.parent / "data" / "records.jsonl"
    data.write_text(data.read_text() + '{"text": "broken\n')
    out = _silo("site", "check", "--config", str(cfg))
    assert out.returncode == DataError.exit_code
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"{data}:6: invalid JSON" in out.stderr


def test_site_check_good_site_reports_split(tmp_path: Path) -> None:
    cfg = _site(tmp_path, [{"text": f"note {i}"} for i in range(50)])
    out = _silo("site", "check", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "site site-a: 50 records" in out.stdout


def test_federation_run_bad_config_fails_before_anything_is_written(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path)
    fed = write_federation(layout, base_model="base", rounds=2, min_sites=2)
    fed.write_text(fed.read_text().replace('strategy = "fedavg"', 'strategy = "fedmagic"'))
    run_dir = tmp_path / "run"
    out = _silo("federation", "run", "--config", str(fed), "--run-dir", str(run_dir), "--insecure")
    assert out.returncode == ConfigError.exit_code
    assert "`federation.strategy` must be one of" in out.stderr and "'fedmagic'" in out.stderr
    assert not run_dir.exists()


def test_demo_refuses_an_out_dir_holding_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": "x"}))
    assert main(["demo", "--out", str(tmp_path)]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "already holds a run" in err
    assert json.loads((run / "manifest.json").read_text()) == {"run_id": "x"}  # untouched
