"""One error family. Each child is named for what the caller does next.

The CLI turns a `SiloError` into one clear line and the exit code below; never a traceback for a
user mistake.
"""


class SiloError(Exception):
    """Base class. `exit_code` is what the `silo` command exits with."""

    exit_code = 1


class ConfigError(SiloError):
    """A configuration file or option is invalid: fix the named field and value."""

    exit_code = 2


class DataError(SiloError):
    """Site records are missing or malformed: fix the named file and line."""

    exit_code = 3


class ScrubFailed(SiloError):
    """PII scrubbing could not run or left identifiers: nothing is trained on or sent."""

    exit_code = 4


class BudgetExhausted(SiloError):
    """The site's privacy budget would be exceeded: the round is refused, nothing trained or sent."""

    exit_code = 5


class LedgerError(SiloError):
    """The privacy ledger is unreadable, locked, or fails verification."""

    exit_code = 6


class UpdateRejected(SiloError):
    """The coordinator rejected a site's update (bad signature, replay, NaN, norm, shape ...)."""

    exit_code = 7


class FederationFailed(SiloError):
    """A federation run did not complete (too few sites, a process died, the run failed)."""

    exit_code = 8


class VerificationFailed(SiloError):
    """An audit verification found a discrepancy."""

    exit_code = 9


class AuditIncomplete(SiloError):
    """An audit could not check everything (a site's ledger or key not given, an encrypted adapter):
    give what is named, or accept the listed gaps with `--partial`."""

    exit_code = 10


class RunRefused(SiloError):
    """A site refused a run it did not agree to (app not the one it approved, run request unsigned,
    forged or for another app, run or round): nothing was executed, trained or spent."""

    exit_code = 11


# Documented in `silo --help`; a test checks every code is listed there.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected Silo error",
    2: "invalid configuration or option (ConfigError)",
    3: "missing or malformed site data (DataError)",
    4: "PII scrubbing failed; nothing trained or sent (ScrubFailed)",
    5: "privacy budget would be exceeded; round refused (BudgetExhausted)",
    6: "privacy ledger unreadable, locked or invalid (LedgerError)",
    7: "update rejected by the coordinator (UpdateRejected)",
    8: "federation run failed (FederationFailed)",
    9: "audit verification found a discrepancy (VerificationFailed)",
    10: "audit incomplete: what it names was not checked; --partial accepts that (AuditIncomplete)",
    11: "a site refused the run: not its approved app, or no valid signed run request (RunRefused)",
    130: "interrupted (Ctrl-C or SIGTERM)",
}
