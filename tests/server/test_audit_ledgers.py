"""What the auditor reads off ledgers alone: restarts an operator made after losing a ledger."""

from client.ledger import Ledger, restart_ledger
from common.keys import generate_signing_key
from common.ledger.verify import read_ledger
from server.audit_ledgers import LedgerFile, ledger_restarts


def test_a_restarted_ledger_is_named_with_the_lost_head(tmp_path):
    key = generate_signing_key()
    path = tmp_path / "ledger.jsonl"
    Ledger.open(path, signing_key=key, create=True).close()
    assert ledger_restarts([LedgerFile(path, read_ledger(path))]) == []

    path.unlink()
    entry = restart_ledger(path, signing_key=key)
    found = ledger_restarts([LedgerFile(path, read_ledger(path))])
    assert len(found) == 1 and "was restarted" in found[0] and ".lost-" in found[0]
    assert entry["update_sha256"] is None  # the lost ledger was empty: no head to name
