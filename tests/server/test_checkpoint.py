"""The coordinator's run directory: manifest, atomic rounds, hash checks, resume and crash leftovers."""

import hashlib
import json

import numpy as np
import pytest

from common.errors import ConfigError, FederationFailed
from common.manifest import ManifestError, read_manifest
from server.checkpoint import ADAPTER_CONFIG, ADAPTER_FILE, MANIFEST, RunDirectory

ADAPTER_CONFIG_DICT = {"peft_type": "LORA", "r": 4, "target_modules": {"q_proj", "v_proj"}}


def _open(path, config_hash: str = "hash-a", rounds_planned: int = 3) -> RunDirectory:
    return RunDirectory.open_or_create(
        path,
        config_hash=config_hash,
        config={"federation": {"rounds": 3}},
        base_model="models/tiny",
        code_version="0.1.0+gabc",
        rounds_planned=rounds_planned,
    )


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {
        "base_model.model.layers.0.q_proj.lora_A.weight": np.full((2, 4), value, dtype=np.float32),
        "base_model.model.layers.0.q_proj.lora_B.weight": np.arange(8, dtype=np.float32).reshape(4, 2) * value,
    }


def _save(run: RunDirectory, n: int, **kwargs) -> str:
    return run.save_round(
        n, _arrays(float(n + 1)), adapter_config=ADAPTER_CONFIG_DICT, record={"kind": "test"}, **kwargs
    )


def test_open_or_create_writes_the_manifest(tmp_path):
    run = _open(tmp_path / "run")

    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    assert manifest["run_id"] == run.run_id and len(run.run_id) == 16
    assert manifest["config_hash"] == "hash-a"
    assert manifest["code_version"] == "0.1.0+gabc"
    assert manifest["base_model"] == "models/tiny"
    assert manifest["config"] == {"federation": {"rounds": 3}}
    assert manifest["status"] == "running"
    assert manifest["completed_rounds"] == -1 and run.completed_rounds == -1


def test_save_round_writes_the_round_and_its_sha256(tmp_path):
    run = _open(tmp_path)

    digest = _save(run, 0)

    round_dir = tmp_path / "rounds" / "0"
    assert sorted(p.name for p in round_dir.iterdir()) == [ADAPTER_CONFIG, ADAPTER_FILE]
    assert digest == hashlib.sha256((round_dir / ADAPTER_FILE).read_bytes()).hexdigest()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["completed_rounds"] == 0
    assert manifest["rounds"][0]["adapter_sha256"] == digest
    assert manifest["rounds"][0]["kind"] == "test"
    config = json.loads((round_dir / ADAPTER_CONFIG).read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"]  # a set is written as a sorted list
    arrays, state = run.load_round(0)
    assert state == {}
    for key, expected in _arrays(1.0).items():
        np.testing.assert_array_equal(arrays[key], expected)


def test_save_round_requires_consecutive_rounds(tmp_path):
    run = _open(tmp_path)

    with pytest.raises(FederationFailed, match="round 1 cannot follow completed round -1"):
        _save(run, 1)
    _save(run, 0)
    with pytest.raises(FederationFailed, match="round 2 cannot follow completed round 0"):
        _save(run, 2)
    with pytest.raises(FederationFailed, match="round 0 cannot follow completed round 0"):
        _save(run, 0)
    assert not (tmp_path / "rounds" / "2").exists()


def test_open_or_create_resumes_with_the_same_config_hash(tmp_path):
    first = _open(tmp_path)
    _save(first, 0)
    _save(first, 1)

    resumed = _open(tmp_path, rounds_planned=5)

    assert resumed.run_id == first.run_id
    assert resumed.completed_rounds == 1
    assert [r["from_round"] for r in resumed.manifest["resumes"]] == [1]
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk["resumes"] == resumed.manifest["resumes"]
    assert on_disk["rounds_planned"] == 5
    _save(resumed, 2)
    assert resumed.completed_rounds == 2


def test_open_or_create_refuses_a_different_config_hash(tmp_path):
    _save(_open(tmp_path), 0)

    with pytest.raises(ConfigError, match="different configuration"):
        _open(tmp_path, config_hash="hash-b")


def test_open_or_create_reports_an_unreadable_manifest(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")

    with pytest.raises(ManifestError, match="unreadable manifest"):
        _open(tmp_path)


def test_save_round_refuses_a_record_outside_the_manifest_schema_before_writing_it(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)

    with pytest.raises(ManifestError, match=r"round 1: unknown field\(s\) `surprise`"):
        run.save_round(1, _arrays(2.0), adapter_config=ADAPTER_CONFIG_DICT, record={"kind": "train", "surprise": 1})

    assert run.completed_rounds == 0 and not (tmp_path / "rounds" / "1").exists()
    assert read_manifest(tmp_path).completed_rounds == 0


def test_resuming_a_schema_1_run_rewrites_its_manifest_in_the_current_schema(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    site = {"node_id": 1, "site_id": "a", "num_examples": 5, "metrics": {"train_loss": 1.25}}
    run.save_round(1, _arrays(2.0), adapter_config=ADAPTER_CONFIG_DICT, record={"kind": "train", "sites": [site]})
    site = {"node_id": 1, "site_id": "a", "num_examples": 5, "train_loss": 1.25}
    raw = json.loads((tmp_path / MANIFEST).read_text())
    raw["schema"] = 1
    raw["rounds"][1]["sites"][0] = site  # the old layout: metrics beside the fields
    (tmp_path / MANIFEST).write_text(json.dumps(raw))

    _open(tmp_path)

    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk["schema"] == 2 and on_disk["rounds"][1]["sites"][0]["metrics"] == {"train_loss": 1.25}


def test_load_round_detects_a_tampered_adapter(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    adapter = tmp_path / "rounds" / "0" / ADAPTER_FILE
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's data
    adapter.write_bytes(bytes(data))

    with pytest.raises(FederationFailed, match="does not match the manifest"):
        run.load_round(0)


def test_load_round_refuses_a_round_not_on_disk(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)

    with pytest.raises(FederationFailed, match="round 1 is not on disk"):
        run.load_round(1)


def test_partial_round_from_a_crash_is_not_a_completed_round(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    # A coordinator killed while writing round 1 leaves only the partial directory.
    partial = tmp_path / "rounds" / ".1.partial"
    partial.mkdir()
    (partial / ADAPTER_FILE).write_bytes(b"half-written")

    resumed = _open(tmp_path)

    assert resumed.completed_rounds == 0
    with pytest.raises(FederationFailed, match="not on disk"):
        resumed.load_round(1)
    digest = _save(resumed, 1)
    assert not partial.exists()
    assert resumed.load_round(1)[0].keys() == _arrays(2.0).keys()
    assert digest == resumed.manifest["rounds"][1]["adapter_sha256"]


def test_save_round_keeps_nested_server_state(tmp_path):
    run = _open(tmp_path)
    state = {
        "strategy": {"m": {"a.lora_A.weight": np.array([0.5, -1.0])}, "v": {"a.lora_A.weight": np.array([2.0, 3.0])}}
    }

    _save(run, 0, server_state=state)
    _, loaded = run.load_round(0)

    assert loaded.keys() == {"strategy"} and loaded["strategy"].keys() == {"m", "v"}
    np.testing.assert_array_equal(loaded["strategy"]["m"]["a.lora_A.weight"], [0.5, -1.0])
    np.testing.assert_array_equal(loaded["strategy"]["v"]["a.lora_A.weight"], [2.0, 3.0])


def test_finish_completed_copies_the_last_round_to_final(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    _save(run, 1)

    run.finish("completed")

    final = tmp_path / "final"
    assert (final / ADAPTER_FILE).read_bytes() == (tmp_path / "rounds" / "1" / ADAPTER_FILE).read_bytes()
    assert (final / ADAPTER_CONFIG).exists()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["status"] == "completed" and "finished" in manifest


def test_finish_failed_records_the_reason_and_writes_no_final(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)

    run.finish("failed", "round 1: 0 usable update(s)")

    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["status"] == "failed"
    assert manifest["failure"] == "round 1: 0 usable update(s)"
    assert not (tmp_path / "final").exists()


def test_a_rounds_checkpoint_time_lands_in_its_entry_with_the_next_manifest_write(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    run.note_timing(0, "checkpoint_seconds", 0.25)  # taken after round 0's entry was written
    assert "timings" not in json.loads((tmp_path / MANIFEST).read_text())["rounds"][0]  # no write of its own
    run.update_round(0, eval={"eval_loss": 1.0})  # the next round records round 0's evaluation
    entry = read_manifest(tmp_path / MANIFEST).rounds[0].to_dict()
    assert entry["timings"] == {"checkpoint_seconds": 0.25} and entry["eval"] == {"eval_loss": 1.0}
