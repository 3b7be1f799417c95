"""`silo keys` and `silo at-rest`: one command makes everything, nothing is overwritten, errors are one line."""

import json
import stat

from common import encryption
from silo.cli import main


def test_silo_keys_makes_the_layout_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "--sites", "a,b", "--superlink-host", "coord.example"]) == 0
    assert "site a:" in capsys.readouterr().out
    for path in (
        "coordinator/ca.key",
        "coordinator/superlink.key",
        "sites/a/supernode_auth.key",
        "sites/b/site_signing.key",
    ):
        assert stat.S_IMODE((out / path).stat().st_mode) == 0o600, path
    ca_before = (out / "coordinator" / "ca.key").read_bytes()

    assert main(["keys", "--out", str(out), "--sites", "c"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "coordinator" / "ca.key").read_bytes() == ca_before

    assert main(["keys", "--out", str(out), "--add-sites", "c", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["sites"]) == ["c"] and "coord.example" in report["superlink_hosts"]
    assert sorted(json.loads((out / "coordinator" / "registry.json").read_text())["sites"]) == ["a", "b", "c"]


def test_silo_keys_bad_site_id_is_one_line_exit_2(tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "k"), "--sites", "a,../b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "site id" in err
    assert not (tmp_path / "k").exists()


def test_silo_at_rest_keygen_and_decrypt_a_directory(tmp_path, capsys):
    key_file = tmp_path / "at_rest.key"
    assert main(["at-rest", "keygen", "--out", str(key_file)]) == 0
    key = encryption.load_key_file(key_file)
    src = tmp_path / "final"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors.enc").write_bytes(
        encryption.encrypt_bytes(key, b"weights", context="adapter_model.safetensors")
    )
    assert (
        main(["at-rest", "decrypt", "--key-file", str(key_file), "--in", str(src), "--out", str(tmp_path / "plain")])
        == 0
    )
    assert (tmp_path / "plain" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (tmp_path / "plain" / "adapter_config.json").read_text() == "{}"
    # Wrong key: exit 9 (verification), nothing written.
    other = tmp_path / "other.key"
    encryption.write_key_file(other)
    capsys.readouterr()
    assert main(["at-rest", "decrypt", "--key-file", str(other), "--in", str(src), "--out", str(tmp_path / "x")]) == 9
    assert "authentication failed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_coordinator_start_refuses_to_run_without_keys_unless_insecure(capsys):
    assert main(["coordinator", "start"]) == 2
    assert "--keys" in capsys.readouterr().err
