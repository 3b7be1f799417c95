"""`silo scrub`: same files and fields out, a report without raw values, clear errors, no half output."""

import csv
import json

import pytest

from silo.cli import main
from silo.synthetic import make_bank_messages, make_clinical_notes


@pytest.fixture
def site_dir(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    notes = make_clinical_notes(12, seed=21)
    with (raw / "notes.jsonl").open("w") as f:
        for i, note in enumerate(notes):
            f.write(json.dumps({"id": i, "text": note.text, "ward": "B"}) + "\n")
        f.write(json.dumps({"id": 99, "body": "no text field"}) + "\n")
    messages = make_bank_messages(8, seed=21)
    with (raw / "messages.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "channel"])
        writer.writeheader()
        writer.writerows({"id": i, "text": m.text, "channel": "app"} for i, m in enumerate(messages))
    (raw / "README.txt").write_text("ignored")
    return raw, notes + messages


def test_cli_scrub_writes_same_files_and_fields_plus_report(site_dir, tmp_path, capsys):
    raw, labelled = site_dir
    out = tmp_path / "scrubbed"
    assert main(["scrub", "--in", str(raw), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["messages.csv", "notes.jsonl", "report.json"]
    notes = [json.loads(line) for line in (out / "notes.jsonl").read_text().splitlines()]
    assert len(notes) == 12 and all(set(n) == {"id", "text", "ward"} for n in notes)
    with (out / "messages.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and list(rows[0]) == ["id", "text", "channel"]
    report_text = (out / "report.json").read_text()
    report = json.loads(report_text)
    assert report["total"]["records_in"] == 21
    assert report["total"]["quarantined"] == 1
    assert report["total"]["quarantine_reasons"] == {"missing_field": 1}
    output = (out / "notes.jsonl").read_text() + (out / "messages.csv").read_text()
    names = [s.entity_value for r in labelled for s in r.spans if s.entity_type == "PERSON"]
    assert names and not any(name in report_text for name in names)
    assert sum(name in output for name in names) <= len(names) // 20  # the same bar as the eval's leak goal
    assert "records written to" in capsys.readouterr().err


def test_cli_scrub_names_file_and_line_of_malformed_jsonl(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken\n')
    out = tmp_path / "out"
    assert main(["scrub", "--in", str(bad), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"{bad}:2: invalid JSON" in err
    assert not out.exists()  # nothing half-written
    assert list(tmp_path.iterdir()) == [bad]


def test_cli_scrub_names_file_and_line_of_a_ragged_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,hello\n2,too,many\n")
    assert main(["scrub", "--in", str(bad), "--out", str(tmp_path / "out")]) == 3
    assert f"{bad}:3: row has a different number of fields" in capsys.readouterr().err


def test_cli_scrub_refuses_a_non_empty_out_dir(site_dir, tmp_path, capsys):
    raw, _ = site_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["scrub", "--in", str(raw), "--out", str(out)]) == 3
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_scrub_reads_config_and_field_options(tmp_path):
    (tmp_path / "site.key").write_bytes(b"a-site-secret-of-sufficient-length")
    (tmp_path / "site.toml").write_text('[scrub]\noperator = "pseudonym"\npseudonym_key_file = "site.key"\n')
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"subject": "From Amara Okafor", "text": "Call Dr. Okafor"}) + "\n")
    out = tmp_path / "out"
    code = main(
        ["scrub", "--in", str(data), "--out", str(out), "--config", str(tmp_path / "site.toml"), "--field", "subject"]
    )
    assert code == 0
    [record] = [json.loads(line) for line in (out / "in.jsonl").read_text().splitlines()]
    assert record["subject"].startswith("From <PERSON_") and "Okafor" not in record["subject"]
    assert record["text"] == "Call Dr. Okafor"  # not a named field
    assert json.loads((out / "report.json").read_text())["config"]["operator"] == "pseudonym"


def test_cli_scrub_rejects_unknown_config_keys(tmp_path, capsys):
    (tmp_path / "site.toml").write_text("[scrub]\nthreshold = 0.4\n")
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    assert (
        main(["scrub", "--in", str(data), "--out", str(tmp_path / "o"), "--config", str(tmp_path / "site.toml")]) == 2
    )
    assert "unknown key(s) in `[scrub]`: threshold" in capsys.readouterr().err
