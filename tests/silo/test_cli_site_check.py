"""`silo site check` on hostile records: one line naming file and line, exit 3, never a traceback or a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import DataError
from silo.cli import main
from silo.demo import DemoLayout, write_site

SECRET = "QZX-4471-KWPD-8823"


def _site(tmp_path: Path) -> Path:
    return write_site(
        DemoLayout(tmp_path), "site-a", [{"text": f"note {i}"} for i in range(10)], base_model="base", rounds=1
    )


def test_site_check_reads_a_csv_field_past_the_csv_module_default(tmp_path, capsys):
    cfg = _site(tmp_path)
    (cfg.parent / "data" / "long.csv").write_text("text\n" + "the plan was reviewed " * 8_000 + "\n")  # 176,000 chars
    assert main(["site", "check", "--config", str(cfg)]) == 0
    assert "site site-a: 11 records" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "line", "problem"),
    [
        (
            "deep.jsonl",
            '{"text": ' + "[" * 5_000 + f'"{SECRET}"' + "]" * 5_000 + "}",
            "invalid record (JSON nested too deeply, limit 32)",
        ),
        ("long.jsonl", '{"text": "' + SECRET * 60_000 + '"}', "record longer than `data.max_record_chars`"),
        ("long.csv", f'"{SECRET * 60_000}"', "record longer than `data.max_record_chars`"),
        ("wrong.jsonl", f'{{"text": {{"{SECRET}": 1}}}}', "field 'text' must be non-empty text, got a JSON object"),
    ],
)
def test_site_check_hostile_record_is_one_line_without_its_value(tmp_path, capsys, name, line, problem):
    cfg = _site(tmp_path)
    path = cfg.parent / "data" / name
    header = "text\n" if name.endswith(".csv") else '{"text": "fine"}\n'
    path.write_text(header + line + "\n")

    assert main(["site", "check", "--config", str(cfg)]) == DataError.exit_code

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}:2: {problem}" in err
    assert SECRET[:4] not in err and SECRET[-4:] not in err
