"""The run directory encrypted at rest: no plain weights on disk, same manifest hashes, resume."""

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from common import encryption
from common.errors import ConfigError, FederationFailed
from server.checkpoint import ADAPTER_CONFIG, ADAPTER_FILE, MANIFEST, SERVER_STATE, RunDirectory

KEY = bytes(range(32))
ADAPTER_CONFIG_DICT = {"peft_type": "LORA", "r": 4}


def _open(path, key=KEY) -> RunDirectory:
    return RunDirectory.open_or_create(
        path, config_hash="h", config={}, base_model="m", code_version="0", rounds_planned=3, at_rest_key=key
    )


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"layers.0.q_proj.lora_A.weight": np.full((2, 4), value, dtype=np.float32)}


def _save(run: RunDirectory, n: int, state=None) -> str:
    return run.save_round(n, _arrays(n + 1.5), adapter_config=ADAPTER_CONFIG_DICT, record={}, server_state=state)


def test_encrypted_round_has_no_plain_weights_and_the_plain_sha256(tmp_path):
    run = _open(tmp_path)
    digest = _save(run, 0, state={"strategy": {"m": _arrays(7.0)}})

    d = tmp_path / "rounds" / "0"
    assert sorted(p.name for p in d.iterdir()) == [ADAPTER_CONFIG, ADAPTER_FILE + ".enc", SERVER_STATE + ".enc"]
    plain = encryption.decrypt_bytes(KEY, (d / (ADAPTER_FILE + ".enc")).read_bytes(), context=ADAPTER_FILE)
    assert hashlib.sha256(plain).hexdigest() == digest
    np.testing.assert_array_equal(
        load_safetensors(plain)["layers.0.q_proj.lora_A.weight"], _arrays(1.5)["layers.0.q_proj.lora_A.weight"]
    )
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["at_rest"]["cipher"] == "AES-256-GCM"
    assert manifest["at_rest"]["key_id"] == encryption.key_id(KEY)


def test_encrypted_run_resumes_with_its_key_and_state(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    _save(run, 1, state={"strategy": {"m": _arrays(7.0)}})
    run.finish("completed")
    assert (tmp_path / "final" / (ADAPTER_FILE + ".enc")).exists() and not (tmp_path / "final" / ADAPTER_FILE).exists()

    resumed = _open(tmp_path)
    arrays, state = resumed.load_round(1)
    np.testing.assert_array_equal(
        arrays["layers.0.q_proj.lora_A.weight"], _arrays(2.5)["layers.0.q_proj.lora_A.weight"]
    )
    np.testing.assert_array_equal(state["strategy"]["m"]["layers.0.q_proj.lora_A.weight"], np.full((2, 4), 7.0))


def test_encrypted_run_refuses_a_missing_or_wrong_key(tmp_path):
    _save(_open(tmp_path), 0)
    with pytest.raises(ConfigError, match="encrypted at rest"):
        _open(tmp_path, key=None)
    with pytest.raises(ConfigError, match="key id"):
        _open(tmp_path, key=bytes(32))


def test_tampered_encrypted_adapter_is_refused_on_resume(tmp_path):
    _save(_open(tmp_path), 0)
    enc = tmp_path / "rounds" / "0" / (ADAPTER_FILE + ".enc")
    blob = bytearray(enc.read_bytes())
    blob[-1] ^= 1
    enc.write_bytes(bytes(blob))
    with pytest.raises(FederationFailed, match="authentication failed"):
        _open(tmp_path).load_round(0)


def test_swapped_encrypted_rounds_are_caught_by_the_manifest_hash(tmp_path):
    run = _open(tmp_path)
    _save(run, 0)
    _save(run, 1)
    r0, r1 = (tmp_path / "rounds" / str(n) / (ADAPTER_FILE + ".enc") for n in (0, 1))
    b0, b1 = r0.read_bytes(), r1.read_bytes()
    r0.write_bytes(b1)
    r1.write_bytes(b0)
    with pytest.raises(FederationFailed, match="does not match the manifest"):
        _open(tmp_path).load_round(1)


def test_plain_run_resumed_with_a_key_encrypts_from_then_on(tmp_path):
    _save(_open(tmp_path, key=None), 0)
    run = _open(tmp_path)
    assert run.manifest["at_rest"]["from_round"] == 1
    assert run.load_round(0)[0].keys() == _arrays(0).keys()
    _save(run, 1)
    assert (tmp_path / "rounds" / "0" / ADAPTER_FILE).exists()
    assert (tmp_path / "rounds" / "1" / (ADAPTER_FILE + ".enc")).exists()


def test_key_comes_from_the_environment_by_default(tmp_path, monkeypatch):
    key_file = tmp_path / "at_rest.key"
    key = encryption.write_key_file(key_file)
    monkeypatch.setenv("SILO_AT_REST_KEY_FILE", str(key_file))
    run = RunDirectory.open_or_create(
        tmp_path / "run", config_hash="h", config={}, base_model="m", code_version="0", rounds_planned=1
    )
    assert run.at_rest_key == key
    _save(run, 0)
    assert (tmp_path / "run" / "rounds" / "0" / (ADAPTER_FILE + ".enc")).exists()
