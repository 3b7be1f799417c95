"""The coordinator's memory of each site's privacy-ledger head, across the runs it coordinates.

A site's ledger only grows: every round appends entries, so the `ledger_index` a site declares with
its update (the index of this round's ledger entry) rises from round to round and from run to run. An
index not above one seen before, in an earlier round or an earlier run, means the site's ledger was
deleted or replaced, which silently resets the budget the ledger enforces. The coordinator cannot
stop that (the ledger is the site's), but it can notice: the round's manifest entry lists it under
`ledger_regressions`, the site's entry carries a warning, and the run's log says so.

    <runs>/ledger_heads.json   beside the run directories (the run directory's parent):
    {"sites": {"<site id>": {"ledger_index": 41, "run_id": "...", "round": 3}}}

Written atomically after each round, from accepted (signed) updates only. Sites that declare no
`ledger_index` (older sites) are neither recorded nor flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from common.manifest import LedgerRegression
from common.schema import Fields
from server.checkpoint import write_json_atomic

LEDGER_HEADS = "ledger_heads.json"


@dataclass(frozen=True)
class LedgerHead:
    ledger_index: int
    run_id: str
    round: int


@dataclass
class LedgerHeads:
    path: Path
    heads: dict[str, LedgerHead] = field(default_factory=dict)

    @classmethod
    def beside(cls, run_dir: str | Path) -> LedgerHeads:
        """The record shared by every run directory under the same parent."""
        return cls.load(Path(run_dir).resolve().parent / LEDGER_HEADS)

    @classmethod
    def load(cls, path: str | Path) -> LedgerHeads:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: unreadable ledger-head record ({err}); move it aside to start afresh") from None
        f = Fields(raw, str(path), ConfigError)
        sites = f.mapping("sites")
        f.done()
        heads = {}
        for site_id, entry in sites.items():
            e = Fields(entry, f"{path}: site {site_id!r}", ConfigError)
            heads[str(site_id)] = LedgerHead(e.integer("ledger_index", minimum=0), e.text("run_id"), e.integer("round"))
            e.done()
        return cls(path, heads)

    def observe(self, site_id: str, ledger_index: int | None, *, run_id: str, round: int) -> LedgerRegression | None:
        """Record what a site declared this round; the regression when its ledger went backwards."""
        if ledger_index is None:
            return None
        head = self.heads.get(site_id)
        if head is not None and (head.run_id, head.round) == (run_id, round):
            return None  # the same round seen again (a resumed round): nothing new
        if head is not None and ledger_index <= head.ledger_index:
            self.heads[site_id] = LedgerHead(ledger_index, run_id, round)
            return LedgerRegression(site_id, ledger_index, head.ledger_index, head.run_id, head.round)
        self.heads[site_id] = LedgerHead(ledger_index, run_id, round)
        return None

    def save(self) -> None:
        sites = {
            s: {"ledger_index": h.ledger_index, "run_id": h.run_id, "round": h.round} for s, h in self.heads.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"sites": dict(sorted(sites.items()))})
