"""Which app bundle (FAB) a site agrees to run, checked from the bundle's bytes alone.

`[site] app` in the site TOML:
- "installed" (default): the FAB must declare the Silo installed here (publisher, name and
  version in its pyproject.toml). The site then runs its own installed code, never the FAB's, so
  the FAB's declaration only says which protocol the coordinator speaks.
- "sha256:<hex>": exactly that FAB, byte for byte (`sha256sum` of the `.fab` that `flwr build`
  wrote). Pin this to refuse any coordinator-side app the site did not review, the ServerApp
  included.

The bundle is hashed and its pyproject.toml read from the zip; nothing in it is installed,
unpacked or imported.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from common.config import APP_PIN_INSTALLED, APP_PIN_SHA256
from common.errors import RunRefused

# What `[tool.flwr.app] publisher` and `[project] name` say in Silo's own pyproject.toml.
SILO_PUBLISHER = "silo"
SILO_NAME = "silo"
# A FAB's pyproject.toml is a few KiB; a larger one is not Silo's (and is not decompressed).
MAX_MANIFEST_BYTES = 1 << 20


def installed_version() -> str:
    try:
        return version(SILO_NAME)
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class AppIdentity:
    sha256: str
    publisher: str
    name: str
    version: str

    def describe(self) -> str:
        return f"{self.publisher}/{self.name} {self.version} (sha256 {self.sha256})"


def identify(fab: bytes) -> AppIdentity:
    """The bundle's sha256 and what its pyproject.toml declares ("?" for what it does not)."""
    digest = hashlib.sha256(fab).hexdigest()
    publisher = name = declared = "?"
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as zf:
            info = zf.getinfo("pyproject.toml")
            if info.file_size <= MAX_MANIFEST_BYTES:
                manifest = tomllib.loads(zf.read(info).decode())
                project, app = manifest.get("project", {}), manifest.get("tool", {}).get("flwr", {}).get("app", {})
                publisher = str(app.get("publisher", "?"))
                name, declared = str(project.get("name", "?")), str(project.get("version", "?"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError, OSError):
        pass
    return AppIdentity(sha256=digest, publisher=publisher, name=name, version=declared)


@dataclass(frozen=True)
class AppPin:
    """`[site] app`, resolved against what is installed here."""

    setting: str = APP_PIN_INSTALLED

    def check(self, app: AppIdentity) -> None:
        """RunRefused unless `app` is the one this site approved."""
        if self.setting.startswith(APP_PIN_SHA256):
            wanted = self.setting.removeprefix(APP_PIN_SHA256)
            if app.sha256 != wanted:
                raise RunRefused(f"app {app.describe()} is not the app this site pinned (sha256 {wanted})")
            return
        here = (SILO_PUBLISHER, SILO_NAME, installed_version())
        if (app.publisher, app.name, app.version) != here:
            raise RunRefused(
                f"app {app.describe()} does not declare the Silo installed here ({here[0]}/{here[1]} {here[2]})"
            )

    def describe(self) -> str:
        if self.setting.startswith(APP_PIN_SHA256):
            return f"only the app bundle with sha256 {self.setting.removeprefix(APP_PIN_SHA256)}"
        return f"only bundles declaring {SILO_PUBLISHER}/{SILO_NAME} {installed_version()}, run with the installed code"
