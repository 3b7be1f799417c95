"""The coordinator's run directory: every completed round on disk, so a killed coordinator resumes.

    RUN/manifest.json                  the run: config hash, code version, base model, sites,
                                       per-round metrics, sha256 of each round's adapter
    RUN/rounds/<n>/adapter_config.json  the global adapter after round n, PEFT format
    RUN/rounds/<n>/adapter_model.safetensors
    RUN/rounds/<n>/server_state.npz    strategy state (FedAdam's moments), when it has any
    RUN/final/                          copy of the last round once the run completes

A round is written to `rounds/.<n>.partial/` and renamed into place, then the manifest is
replaced atomically: a crash leaves either the whole round or none of it.

Encryption at rest: when the coordinator's environment names a key (`SILO_AT_REST_KEY_FILE`, or
`SILO_AT_REST_KEY`; see common/encryption.py), the adapter weights and the strategy state are
written only as AES-256-GCM `adapter_model.safetensors.enc` / `server_state.npz.enc`, never in
plain text, and the manifest records the cipher and key id. `adapter_config.json` (rank, alpha,
target modules) and the manifest (metrics, hashes, site ids: what auditors read) stay plain. The
manifest's `adapter_sha256` is always the hash of the plain adapter, so it names the same adapter
whether encrypted or not; resuming decrypts, checks that hash, and refuses a wrong or missing key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from common import encryption
from common.errors import ConfigError, FederationFailed
from common.files import write_atomic
from common.manifest import MANIFEST, SCHEMA_VERSION, FailedRound, Manifest, Rejection, RoundEntry, parse_manifest

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SERVER_STATE = "server_state.npz"
# Marks "read the at-rest key from the environment" (None means: no encryption).
KEY_FROM_ENV: Any = object()


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


class RunDirectory:
    def __init__(self, path: str | Path, manifest: dict[str, Any], *, at_rest_key: bytes | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.at_rest_key = at_rest_key

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        *,
        config_hash: str,
        config: dict[str, Any],
        base_model: str,
        code_version: str,
        rounds_planned: int,
        at_rest_key: Any = KEY_FROM_ENV,
    ) -> RunDirectory:
        """A new run, or the existing one at `path` to resume (same config hash required).

        `at_rest_key`: 32 bytes to encrypt rounds with, None for none, or by default whatever the
        environment names (SILO_AT_REST_KEY_FILE / SILO_AT_REST_KEY)."""
        key = encryption.key_from_env() if at_rest_key is KEY_FROM_ENV else at_rest_key
        p = Path(path)
        manifest_path = p / MANIFEST
        if manifest_path.exists():
            # Read through the schema (common/manifest.py): an older layout comes back in the current one.
            manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path)).to_dict()
            if manifest.get("config_hash") != config_hash:
                raise ConfigError(
                    f"{p} holds a run with a different configuration (config hash "
                    f"{str(manifest.get('config_hash'))[:12]} != {config_hash[:12]}); use a new run directory"
                )
            _check_resume_key(p, manifest.get("at_rest"), key)
            run = cls(p, manifest, at_rest_key=key)
            if key is not None and not manifest.get("at_rest"):
                run.manifest["at_rest"] = _at_rest_record(key, from_round=run.completed_rounds + 1)
            run.manifest["status"] = "running"
            run.manifest.setdefault("resumes", []).append({"at": _now(), "from_round": run.completed_rounds})
            run.manifest["rounds_planned"] = rounds_planned
            run._save_manifest()
            return run
        p.mkdir(parents=True, exist_ok=True)
        manifest = {
            "schema": SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex[:16],
            "created": _now(),
            "status": "running",
            "code_version": code_version,
            "config_hash": config_hash,
            "config": config,
            "base_model": base_model,
            "rounds_planned": rounds_planned,
            "completed_rounds": -1,
            "sites": {},
            "rounds": [],
        }
        if key is not None:
            manifest["at_rest"] = _at_rest_record(key, from_round=0)
        run = cls(p, manifest, at_rest_key=key)
        run._save_manifest()
        return run

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def completed_rounds(self) -> int:
        """-1 before round 0 (the initial adapter) is saved."""
        return int(self.manifest["completed_rounds"])

    def round_dir(self, n: int) -> Path:
        return self.path / "rounds" / str(n)

    # ---- writing -------------------------------------------------------------------------
    def save_round(
        self,
        n: int,
        arrays: dict[str, np.ndarray],
        *,
        adapter_config: dict[str, Any],
        record: dict[str, Any],
        server_state: dict[str, Any] | None = None,
    ) -> str:
        """Write round `n`'s global adapter and metrics; returns the adapter file's sha256."""
        if n != self.completed_rounds + 1:
            raise FederationFailed(f"round {n} cannot follow completed round {self.completed_rounds}")
        final = self.round_dir(n)
        partial = final.with_name(f".{n}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        adapter = save_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"format": "pt"})
        self._write(partial, ADAPTER_FILE, adapter)
        (partial / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2, default=_json_default) + "\n")
        if server_state:
            buf = io.BytesIO()
            # allow_pickle=False: an object that is not an array fails here, not when the run resumes.
            np.savez(buf, allow_pickle=False, **_flatten(server_state))
            self._write(partial, SERVER_STATE, buf.getvalue())
        digest = hashlib.sha256(adapter).hexdigest()
        entry = {"round": n, "adapter_sha256": digest, "completed_at": _now(), **record}
        # The entry is checked against the manifest schema before the round lands, not after.
        entry = RoundEntry.from_dict(entry, f"{self.path / MANIFEST}: round {n}").to_dict()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        self.manifest["rounds"] = [r for r in self.manifest["rounds"] if r["round"] != n] + [entry]
        self.manifest["completed_rounds"] = n
        self._save_manifest()
        return digest

    def record_submission(self, *, base_model_sha256: str, flower_run_id: int | None) -> None:
        """This submission's base model fingerprint and Flower run id. A resumed run on another base
        model is refused: its adapters so far were trained on the recorded one."""
        recorded = self.manifest.get("base_model_sha256")
        if recorded is not None and recorded != base_model_sha256:
            raise ConfigError(
                f"{self.path} was trained on base model sha256 {recorded[:16]}, this configuration's base model "
                f"is {base_model_sha256[:16]}; resume with the same base model, or use a new run directory"
            )
        self.manifest["base_model_sha256"] = base_model_sha256
        ids = self.manifest.setdefault("flower_run_ids", [])
        if flower_run_id is not None and flower_run_id not in ids:
            ids.append(flower_run_id)
        self._save_manifest()

    def record_failed_round(self, n: int, rejected: list[Rejection]) -> None:
        """The round the run stopped in, with the replies it rejected (it gets no round entry)."""
        self.manifest["failed_round"] = FailedRound(round=n, rejected=tuple(rejected)).to_dict()
        self._save_manifest()

    def update_round(self, n: int, **fields: Any) -> None:
        for entry in self.manifest["rounds"]:
            if entry["round"] == n:
                entry.update(fields)
        self._save_manifest()

    def note_timing(self, n: int, name: str, seconds: float) -> None:
        """A timing of round `n` taken after its entry was written (its checkpoint): kept in memory and
        written with the manifest's next write (the next round's, or the final evaluation's)."""
        for entry in self.manifest["rounds"]:
            if entry["round"] == n:
                entry.setdefault("timings", {})[name] = seconds

    def set_sites(self, sites: dict[str, str]) -> None:
        self.manifest["sites"].update(sites)
        self._save_manifest()

    def finish(self, status: str, reason: str | None = None) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = _now()
        if reason:
            self.manifest["failure"] = reason
        if status == "completed" and self.completed_rounds >= 0:
            final = self.path / "final"
            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(self.round_dir(self.completed_rounds), final)
        self._save_manifest()

    def _save_manifest(self) -> None:
        """Written only through the manifest schema: what lands on disk is what `read_manifest` reads."""
        path = self.path / MANIFEST
        self.manifest = Manifest.from_dict(self.manifest, str(path)).to_dict()
        write_json_atomic(path, self.manifest)

    def read(self) -> Manifest:
        """The manifest as its schema's dataclasses."""
        return Manifest.from_dict(self.manifest, str(self.path / MANIFEST))

    def _write(self, directory: Path, name: str, data: bytes) -> None:
        """`data` as `name`, or only as `name.enc` when a key is set: plain weights never touch the disk."""
        if self.at_rest_key is None:
            (directory / name).write_bytes(data)
        else:
            encrypted = encryption.encrypt_bytes(self.at_rest_key, data, context=name)
            (directory / (name + encryption.SUFFIX)).write_bytes(encrypted)

    def _read(self, directory: Path, name: str) -> bytes | None:
        """The plain bytes of `name` in `directory` (decrypting `name.enc`); None when neither exists."""
        encrypted = directory / (name + encryption.SUFFIX)
        if encrypted.exists():
            if self.at_rest_key is None:
                raise ConfigError(
                    f"{encrypted} is encrypted at rest; give its key in {encryption.ENV_KEY_FILE} or {encryption.ENV_KEY}"
                )
            try:
                return encryption.decrypt_bytes(
                    self.at_rest_key, encrypted.read_bytes(), context=name, source=str(encrypted)
                )
            except encryption.DecryptionFailed as err:
                raise FederationFailed(str(err)) from None
        plain = directory / name
        return plain.read_bytes() if plain.exists() else None

    # ---- reading -------------------------------------------------------------------------
    def load_round(self, n: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Round `n`'s adapter arrays (hash-checked against the manifest) and strategy state."""
        d = self.round_dir(n)
        expected = next((r["adapter_sha256"] for r in self.manifest["rounds"] if r["round"] == n), None)
        adapter = self._read(d, ADAPTER_FILE) if expected is not None else None
        if adapter is None or expected is None:
            raise FederationFailed(f"{d}: round {n} is not on disk; cannot resume")
        actual = hashlib.sha256(adapter).hexdigest()
        if actual != expected:
            raise FederationFailed(
                f"{d / ADAPTER_FILE}: sha256 {actual[:12]} does not match the manifest's {expected[:12]}"
            )
        state: dict[str, Any] = {}
        packed = self._read(d, SERVER_STATE)
        if packed is not None:
            with np.load(io.BytesIO(packed), allow_pickle=False) as npz:
                for flat_key in npz.files:
                    *groups, key = flat_key.split("/")
                    node = state
                    for group in groups:
                        node = node.setdefault(group, {})
                    node[key] = npz[flat_key]
        return load_safetensors(adapter), state


def _at_rest_record(key: bytes, *, from_round: int) -> dict[str, Any]:
    return {
        "cipher": encryption.CIPHER,
        "key_id": encryption.key_id(key),
        "from_round": from_round,
        "encrypted": [ADAPTER_FILE, SERVER_STATE],
    }


def _check_resume_key(path: Path, record: dict[str, Any] | None, key: bytes | None) -> None:
    """A run encrypted at rest resumes only with its own key (checked by id before any round is read)."""
    if not record:
        return
    if key is None:
        raise ConfigError(
            f"{path} is encrypted at rest (key id {record.get('key_id')}); give its key in "
            f"{encryption.ENV_KEY_FILE} or {encryption.ENV_KEY} to resume"
        )
    if encryption.key_id(key) != record.get("key_id"):
        raise ConfigError(
            f"{path} was encrypted with key id {record.get('key_id')}, not the given key's {encryption.key_id(key)}"
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts of arrays (FedAdam's {"strategy": {"m": {name: array}}}) as "a/b/name" keys.

    npz holds only flat arrays; a nested dict would be pickled and refused on load."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if "/" in key:
            raise FederationFailed(f"server state key {key!r} must not contain '/'")
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value)
    return flat


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | tuple):
        return sorted(obj) if isinstance(obj, set) else list(obj)
    return str(obj)
