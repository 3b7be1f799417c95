"""`silo scrub`: same files and fields out, a report without raw values, clear errors, no half output."""

import csv
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from client.ingest import read_record_file
from client.normalize import normalize
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
    (tmp_path / "site.key").chmod(0o600)
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


# ---- hostile input ----------------------------------------------------------------------------------------


def test_cli_scrub_hidden_identifiers_are_scrubbed_not_passed_through(tmp_path, capsys):
    hidden = {
        "j\u200bohn@ex\u200bample.com": "john@example.com",
        "555\u2011123\u20114567": "5551234567",
        "555\u2013123\u20134567": "5551234567",
        "５５５－１２３－４５６７": "5551234567",
        "4111\u00a01111\u00a01111\u00a01111": "4111111111111111",
        "j\u043ehn@\u0435x\u0430mple.com": "john@example.com",
        "Jo\u200bhn Sm\u200bith": "Smith",
    }
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": f"Patient: Ada Quist. Contact: {v} today."}) + "\n" for v in hidden))
    out = tmp_path / "out"

    assert main(["scrub", "--in", str(data), "--out", str(out)]) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["total"]["records_out"] == len(hidden) and report["total"]["quarantined"] == 0
    written = normalize((out / "in.jsonl").read_text()).text
    digits = "".join(c for c in written if c.isdigit())
    for shown, plain in hidden.items():
        assert (plain not in digits) if plain.isdigit() else (plain not in written), shown


def test_cli_scrub_reads_a_csv_field_past_the_csv_module_default(tmp_path):
    data = tmp_path / "long.csv"
    data.write_text("id,text\n1," + "the plan was reviewed " * 8_000 + "call 617-555-0142\n")  # 176,000 characters
    out = tmp_path / "out"

    assert main(["scrub", "--in", str(data), "--out", str(out)]) == 0

    [(_, row)] = read_record_file(out / "long.csv")  # (the csv module alone refuses the field)
    assert row["text"].endswith("call <PHONE_NUMBER>")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("long-line.csv", "id,text\n2," + "x" * 30_000 + "\n", "record longer than"),
        # Short lines, one quoted field spanning 300 of them: the field is refused where it passes the limit.
        ("long-field.csv", 'id,text\n2,"' + ("x" * 99 + "\n") * 300 + '"\n', "a field longer than"),
        ("huge.jsonl", '{"text": "fine"}\n{"text": "' + "x" * 30_000 + '"}\n', "record longer than"),
        ("deep.jsonl", '{"text": "fine"}\n{"text": ' + "[" * 5_000 + "]" * 5_000 + "}\n", "nested too deeply"),
        ("bytes.jsonl", '{"text": "fine"}\n{"text": "caf\xe9"}\n', "not UTF-8"),
    ],
)
def test_cli_scrub_hostile_record_is_one_line_naming_file_and_line(tmp_path, capsys, name, content, problem):
    (tmp_path / "site.toml").write_text("[data]\nmax_record_chars = 20000\n")
    data = tmp_path / name
    data.write_bytes(content.encode("latin-1"))
    out = tmp_path / "out"

    code = main(["scrub", "--in", str(data), "--out", str(out), "--config", str(tmp_path / "site.toml")])

    err = capsys.readouterr().err
    assert code == 3
    assert err.count("\n") == 1 and problem in err
    assert re.search(rf"error: {re.escape(str(data))}:\d+: ", err)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_cli_scrub_rejects_a_bad_max_record_chars(tmp_path, capsys):
    (tmp_path / "site.toml").write_text("[data]\nmax_record_chars = 0\n")
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "fine"}\n')
    assert (
        main(["scrub", "--in", str(data), "--out", str(tmp_path / "o"), "--config", str(tmp_path / "site.toml")]) == 2
    )
    assert "`data.max_record_chars` must be > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_scrub_signal_mid_scrub_leaves_nothing_behind(tmp_path, sig):
    data = tmp_path / "notes.jsonl"
    notes = [json.dumps({"text": n.text}) + "\n" for n in make_clinical_notes(100, seed=4)]
    data.write_text("".join(notes * 40))  # 4,000 records: tens of seconds of scrubbing
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "silo", "scrub", "--in", str(data), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.*")):  # the staging directory: scrubbing has begun
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "silo scrub: interrupted" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.jsonl"]
