"""Regenerate docs/screenshots/: the feature page, the labelling card, /estimates and /contrast at 420 and 1280 px
(each as a 900 px tall window shows it, above the fold; /contrast whole), from a quick run.

Builds ``runs/quick`` with ``monosemantic run --preset quick --no-serve`` when it is missing, serves it on a
free loopback port and drives Debian's Chromium (headless, through Playwright), so the README shows what a
user will see. Run it with ``make screenshots``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from app.settings import Settings
from app.web.factory import create_app

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / "runs" / "quick"
OUT = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
WIDTHS = (420, 1280)
# The study's contrast: the period after a title against a sentence-final period before a capitalised word.
CONTRAST_QUERY = (
    r"a=%5Cb%28%3F%3AMr%7CMrs%7CDr%29%5B%5B%5C.%5D%5D&b=%5Cb%5Ba-z%5D%7B2%2C%7D%5B%5B%5C.%5D%5D+%5BA-Z%5D"
    "&max_positions=500"
)
CONTRAST_TIMEOUT_MS = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    if not (WORKDIR / "monosemantic.db").exists():
        command = [sys.executable, "-m", "app", "run", "--preset", "quick", "--workdir", str(WORKDIR), "--no-serve"]
        subprocess.run(command, check=True)
    port = free_port()
    app = create_app(Settings(workdir=WORKDIR))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/api/dictionaries")
        dictionaries = page.evaluate("() => JSON.parse(document.body.innerText)")
        chosen = max(dictionaries, key=lambda d: (d["arch"] == "topk", d["dict_size"]))
        # The alive feature that fires hardest: the same one on every regeneration from the same run.
        page.goto(f"{base}/api/dictionaries/{chosen['id']}/features?sort=max_activation&order=desc&limit=1")
        feature = page.evaluate("() => JSON.parse(document.body.innerText)")["features"][0]["index"]
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            view = context.new_page()
            view.goto(f"{base}/dictionaries/{chosen['id']}/features/{feature}")
            view.screenshot(path=str(OUT / f"feature_{width}.png"))
            view.goto(f"{base}/dictionaries/{chosen['id']}/label?feature={feature}")
            view.fill("input[name=labeller]", "Ada")
            view.click("button[type=submit]")
            view.wait_for_selector("#labelling.ready")
            view.screenshot(path=str(OUT / f"labelling_{width}.png"))
            view.goto(f"{base}/estimates")
            view.screenshot(path=str(OUT / f"estimates_{width}.png"))
            view.goto(f"{base}/contrast?{CONTRAST_QUERY}", timeout=CONTRAST_TIMEOUT_MS)
            view.wait_for_selector("#contrast-result")
            view.screenshot(path=str(OUT / f"contrast_{width}.png"), full_page=True)  # form and result
            context.close()
        browser.close()
    server.should_exit = True
    print(f"wrote {', '.join(sorted(p.name for p in OUT.glob('*.png')))} to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
