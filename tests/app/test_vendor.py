"""Vendoring of browser files with a stand-in ``npm`` on PATH: what is copied where, and when npm is not run."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from app.web.vendor import VendorError, fetch_htmx, fetch_swagger_ui, swagger_ui_paths


def fake_npm(bin_dir: Path, members: dict[str, bytes], log: Path) -> None:
    """An ``npm`` that logs its arguments and ``pack`` writes a tarball of ``members`` into the working folder."""
    tarball = bin_dir / "package.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    script = bin_dir / "npm"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\ncp "{tarball}" ./pkg-1.0.0.tgz\necho pkg-1.0.0.tgz\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def npm_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "npm.log"
    members = {
        "package/swagger-ui-bundle.js": b"window.SwaggerUIBundle = 1;",
        "package/swagger-ui.css": b".swagger-ui {}",
        "package/index.html": b"<html>",
    }
    fake_npm(bin_dir, members, log)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_swagger_ui_is_copied_from_its_package_once(tmp_path: Path, npm_log: Path) -> None:
    static, cache = tmp_path / "static", tmp_path / "cache"
    paths = fetch_swagger_ui(static, cache)
    assert paths == swagger_ui_paths(static)
    assert paths == [static / "vendor/swagger-ui/swagger-ui-bundle.js", static / "vendor/swagger-ui/swagger-ui.css"]
    assert [p.read_bytes() for p in paths] == [b"window.SwaggerUIBundle = 1;", b".swagger-ui {}"]
    assert npm_log.read_text().split("\n")[0] == "pack swagger-ui-dist@5 --silent"
    assert list((cache / "swagger-ui").iterdir()) == []  # the tarball is removed after unpacking
    assert sorted(p.name for p in (static / "vendor/swagger-ui").iterdir()) == [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
    ]

    fetch_swagger_ui(static, cache)
    assert len(npm_log.read_text().splitlines()) == 1  # both files present: npm is not run again
    paths[1].unlink()
    fetch_swagger_ui(static, cache)
    assert len(npm_log.read_text().splitlines()) == 2 and paths[1].read_bytes() == b".swagger-ui {}"


def test_a_package_without_the_file_is_an_error_that_says_what_to_do(tmp_path: Path, npm_log: Path) -> None:
    with pytest.raises(VendorError, match=r"holds no package/dist/htmx.min.js: delete .* and rerun make setup"):
        fetch_htmx(tmp_path / "static", tmp_path / "cache")
    assert not (tmp_path / "static" / "vendor" / "htmx.min.js").exists()
