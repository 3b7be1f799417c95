"""One error family. Each child is named for what the caller does next.

The CLI turns a `SiloError` into one clear line and the exit code below; never a traceback for a
user mistake.
"""


class SiloError(Exception):
    """Base class. `exit_code` is what the `silo` command exits with, `summary` its line in `silo --help`."""

    exit_code = 1
    summary = "unexpected Silo error"


class ConfigError(SiloError):
    """A configuration file or option is invalid: fix the named field and value."""

    exit_code = 2
    summary = "invalid configuration or option"


class DataError(SiloError):
    """Site records are missing or malformed: fix the named file and line."""

    exit_code = 3
    summary = "missing or malformed site data"


class ScrubFailed(SiloError):
    """PII scrubbing could not run or left identifiers: nothing is trained on or sent."""

    exit_code = 4
    summary = "PII scrubbing failed; nothing trained or sent"


class BudgetExhausted(SiloError):
    """The site's privacy budget would be exceeded: the round is refused, nothing trained or sent."""

    exit_code = 5
    summary = "privacy budget would be exceeded; round refused"


class LedgerError(SiloError):
    """The privacy ledger is unreadable, locked, or fails verification."""

    exit_code = 6
    summary = "privacy ledger unreadable, locked or invalid"


class UpdateRejected(SiloError):
    """The coordinator rejected a site's update (bad signature, replay, NaN, norm, shape ...)."""

    exit_code = 7
    summary = "update rejected by the coordinator"


class FederationFailed(SiloError):
    """A federation run did not complete (too few sites, a process died, the run failed)."""

    exit_code = 8
    summary = "federation run failed"


class VerificationFailed(SiloError):
    """An audit verification found a discrepancy."""

    exit_code = 9
    summary = "audit verification found a discrepancy"


class AuditIncomplete(SiloError):
    """An audit could not check everything (a site's ledger or key not given, an encrypted adapter):
    give what is named, or accept the listed gaps with `--partial`."""

    exit_code = 10
    summary = "audit incomplete: what it names was not checked; --partial accepts that"


class RunRefused(SiloError):
    """A site refused a run it did not agree to (app not the one it approved, run request unsigned,
    forged or for another app, run or round): nothing was executed, trained or spent."""

    exit_code = 11
    summary = "a site refused the run: not its approved app, or no valid signed run request"


def _family(cls: type[SiloError]) -> list[type[SiloError]]:
    """`cls` and its subclasses, depth first, in definition order."""
    return [cls, *(c for sub in cls.__subclasses__() for c in _family(sub))]


def exit_codes() -> dict[int, str]:
    """Every exit code of the `silo` command and what it means, from the classes that set one (a child
    that keeps its parent's code, e.g. a manifest's ConfigError, adds no row). `silo --help` lists them;
    a test checks every code is listed there."""
    codes = {0: "success"}
    for cls in _family(SiloError):
        if "exit_code" in vars(cls):
            codes[cls.exit_code] = cls.summary if cls is SiloError else f"{cls.summary} ({cls.__name__})"
    codes[INTERRUPTED] = "interrupted (Ctrl-C or SIGTERM)"
    return dict(sorted(codes.items()))


INTERRUPTED = 130
"""Exit code after Ctrl-C or SIGTERM: 128 + SIGINT, as shells report it."""

EXIT_CODES: dict[int, str] = exit_codes()
"""The table as the classes defined in this module give it (see `exit_codes`)."""
