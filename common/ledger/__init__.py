"""The privacy ledger's format, its signed head and its verifier: what the site that writes a ledger and
the auditor who checks it both read (the writer and its lock stay at the site, `client/ledger.py` and beside it).

A ledger is an append-only, hash-chained, signed JSONL file. One line per entry, each the canonical
JSON (sorted keys, no spaces, ASCII) of one entry. Every entry holds `prev_sha256`, the sha256 of the
previous line's bytes (64 zeros for the first), and `signature`, the site's Ed25519 signature of its
own canonical JSON without `signature`.

Two kinds of entry, because a round spends privacy from the moment it is planned:

- `reserve`: written BEFORE training, once the budget check passed. It carries the round's DP event
  `(noise_multiplier, sample_rate, steps)` and counts as spent from then on.
- `round`: written after training, before the update leaves the site. It completes one reservation
  (`reservation` = its index), repeats its event, and adds the update's sha256, the dataset size and
  the clipping norm.

Two more kinds (ledger format 2):

- `evaluation`: a DP release of statistics about the site's hold-out records (client/privacy.py
  `release_evaluation`), written before the answer is sent. Its event `(noise_multiplier, 1.0, 1)` is a
  Gaussian mechanism and counts as spent like any reservation; `update_sha256` names the adapter that
  was evaluated.
- `restart`: only ever entry 0, written by `silo ledger restart` when an operator deliberately starts a
  new ledger after losing one; `update_sha256` holds the lost ledger's last known head (or null).

Every format-2 entry records `noise_source`: where the randomness behind its ε came from ("os-seeded",
"caller-generator" in tests, "none" without DP). Format-1 entries, written before fresh noise existed,
have no such field; their ε claims are void and `silo audit verify` says so.

Every format-3 entry records `phase`: what a `reserve` and its `round` trained ("probe": a DP linear
probe, the classification head alone, in the first `[training] probe_rounds` rounds of a run; "lora":
LoRA and the head), null on other kinds. The probe's share of the budget is the ε of its rounds' events.

The head (`head.py`): after every append the site writes `<ledger>.head`, the entry count and the
sha256 of the last line, signed with the site's key; a ledger shorter than its head, or whose entry at
the head's position is not the one the head signed, was lost, truncated or replaced.

ε of an entry: `epsilon_round` is the ε of its event alone; `epsilon_total` is the ε of the composition
of EVERY reserved event up to and including this entry (across runs and restarts), recomputed from the
events with the entry's accountant, conversion and δ, never a sum of per-round ε.

A round trained without DP (`dp_enabled: false`) has `noise_multiplier` 0 and ε = inf; from then on the
ledger's total is inf, which only a site whose config says `budget_epsilon = inf` accepts. Infinite
ε is written as the string "inf" so that the file stays strict JSON.

The verifier (`verify.py`) catches any edited, deleted, inserted or reordered entry, and names the
first bad one. Truncating the TAIL of the file cannot be detected from the file alone: compare the last
entry with the coordinator's record of the site's last update (its sha256) for that.
"""
