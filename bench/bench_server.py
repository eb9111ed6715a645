"""Throughput and latency of the web app under load, each beside a trivial endpoint of the same server.

Starts ``monosemantic serve`` on a loopback port over a database with indexed dictionaries, then loads
each endpoint for ``--seconds`` with ``--clients`` concurrent connections: ``/api/health`` (the reference:
one tiny query, no template), the feature page, the feature JSON and label POSTs. Requests rotate over the
alive features of the largest dictionary. It prints requests/s, p50 and p99 latency, and each endpoint's
throughput as a fraction of the reference's. Goal: the feature page at >= 0.5 of the reference, p99 < 100 ms.

The load generator is ``wrk`` when installed (apt-get install wrk), else an asyncio httpx client in this
process. Either way it shares the machine's cores with the server, so absolute numbers understate the server;
the ratios compare like with like. The database is, by default, a copy of ``runs/default/monosemantic.db``
(label POSTs write into the copy, never into the run) or, without it, a synthetic run of one 1024-latent
dictionary with full-sized evidence (20 top contexts and 50 quantile samples of 33 tokens per feature).

    .venv/bin/python bench/bench_server.py [--workdir runs/default | --db URL] [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the synthetic run comes from the tests' builders

from app.db.backup import backup_sqlite  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.db.models import Dictionary, Feature  # noqa: E402
from app.db.session import make_engine, make_sessionmaker  # noqa: E402
from app.services.ingest import ingest_run  # noqa: E402
from app.web.csrf import CSRF_COOKIE  # noqa: E402
from training.features.index import FeatureIndexConfig  # noqa: E402

SYNTHETIC_SIZE = 1024
MAX_ROTATED_FEATURES = 256
SERVER_START_TIMEOUT_S = 60
GOAL_PAGE_RATIO = 0.5
GOAL_P99_MS = 100.0


@dataclass
class Endpoint:
    """One loaded endpoint: a name, the method, and the paths (with bodies) requests rotate over."""

    name: str
    method: str
    paths: list[str]
    bodies: list[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def prepare_database(args: argparse.Namespace, scratch: Path) -> tuple[str, str]:
    """(URL, description) of the database to load: --db, a copy of the run's database, or a synthetic run."""
    if args.db:
        return args.db, f"{args.db} (label POSTs write into it)"
    source = args.workdir / "monosemantic.db"
    if source.is_file():
        copy = scratch / "monosemantic.db"
        backup_sqlite(f"sqlite:///{source.resolve()}", copy)
        return f"sqlite:///{copy}", f"a copy of {source}"
    from tests.db.builders import build_run

    url = f"sqlite:///{scratch / 'synthetic.db'}"
    upgrade_to_head(url)
    run = build_run(scratch / "run", sizes=(SYNTHETIC_SIZE,), config=FeatureIndexConfig())
    engine = make_engine(url)
    try:
        ingest_run(engine, run.run_dir)
    finally:
        engine.dispose()
    return url, f"a synthetic run of one {SYNTHETIC_SIZE}-latent dictionary ({source} does not exist)"


def pick_features(url: str) -> tuple[int, str, list[int]]:
    """The largest dictionary's id and name, and up to MAX_ROTATED_FEATURES of its alive features."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            dictionary = session.scalars(select(Dictionary).order_by(Dictionary.dict_size.desc())).first()
            if dictionary is None:
                raise SystemExit(f"{url} holds no indexed dictionary: run `monosemantic index` first")
            alive = session.scalars(
                select(Feature.index).where(Feature.dictionary_id == dictionary.id, Feature.alive)
            ).all()
            return dictionary.id, dictionary.name, random.Random(0).sample(alive, min(len(alive), MAX_ROTATED_FEATURES))
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(url: str, workdir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``monosemantic serve`` on a free loopback port; the process and its base URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONOSEMANTIC_")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "app", "serve", "--db", url, "--workdir", str(workdir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start within {SERVER_START_TIMEOUT_S} s: {log_path.read_text()[-2000:]}")


def endpoints(dictionary_id: int, indices: list[int]) -> list[Endpoint]:
    """The reference first, then the feature page, its JSON twin and label POSTs over the same features."""
    base = f"/dictionaries/{dictionary_id}/features"
    labels = [
        json.dumps({"labeller": f"bench-{i % 16}", "verdict": "monosemantic", "description": "load test"})
        for i in range(len(indices))
    ]
    # A labeller's browser holds the CSRF cookie after its first page, so the page's load sends one too.
    browser = {"Cookie": f"{CSRF_COOKIE}={secrets.token_urlsafe(32)}"}
    return [
        Endpoint("GET /api/health (reference)", "GET", ["/api/health"]),
        Endpoint("GET feature page", "GET", [f"{base}/{i}" for i in indices], headers=browser),
        Endpoint("GET feature JSON", "GET", [f"/api{base}/{i}" for i in indices]),
        Endpoint("POST label", "POST", [f"/api{base}/{i}/labels" for i in indices], labels),
    ]


def warm_up(base: str, endpoint: Endpoint) -> None:
    """View every path of a GET endpoint once, so the load measures views of cached features."""
    if endpoint.method != "GET":
        return
    with httpx.Client(base_url=base, timeout=60, headers=endpoint.headers) as client:
        for path in endpoint.paths:
            client.get(path).raise_for_status()


# --- load generators ------------------------------------------------------------------------------------------

WRK_SCRIPT = """
local paths = {%(paths)s}
local bodies = {%(bodies)s}
local method = "%(method)s"
local headers = {%(headers)s}
local n = 0
function setup(thread) thread:set("offset", math.random(1, #paths)) end
function request()
  n = n + 1
  local i = ((n + offset) %% #paths) + 1
  if method == "POST" then
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", paths[i], headers, bodies[i])
  end
  return wrk.format("GET", paths[i], headers)
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_strings(values: list[str]) -> str:
    return ", ".join(json.dumps(v) for v in values)  # JSON string literals are valid Lua for our ASCII text


def run_wrk(base: str, endpoint: Endpoint, seconds: float, clients: int, scratch: Path) -> LoadResult:
    """Load one endpoint with wrk (one thread, ``clients`` connections)."""
    script = scratch / "load.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "paths": _lua_strings(endpoint.paths),
            "bodies": _lua_strings(endpoint.bodies or []),
            "method": endpoint.method,
            "headers": ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in endpoint.headers.items()),
        }
    )
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script)]
    output = subprocess.run(command + [base], capture_output=True, text=True, check=True).stdout
    requests, errors, p50_us, p99_us = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)", output).groups()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return LoadResult(rate, float(p50_us) / 1000, float(p99_us) / 1000, int(requests), int(errors))


async def _httpx_load(base: str, endpoint: Endpoint, seconds: float, clients: int) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10, headers=endpoint.headers) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < deadline:
                i = n % len(endpoint.paths)
                n += 1
                sent = time.perf_counter()
                if endpoint.method == "POST":
                    headers = {"Content-Type": "application/json"}
                    response = await client.post(endpoint.paths[i], content=endpoint.bodies[i], headers=headers)
                else:
                    response = await client.get(endpoint.paths[i])
                latencies.append(time.perf_counter() - sent)
                errors += response.status_code >= 400

        await asyncio.gather(*(worker(k * 7) for k in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return LoadResult(len(ms) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms), errors)


def run_httpx(base: str, endpoint: Endpoint, seconds: float, clients: int, scratch: Path) -> LoadResult:
    """Load one endpoint with ``clients`` concurrent asyncio tasks of an httpx client."""
    return asyncio.run(_httpx_load(base, endpoint, seconds, clients))


# --- main -----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/default"), help="run whose database to copy")
    parser.add_argument("--db", default=None, help="load this database instead (label POSTs write into it)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per endpoint")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    load = run_wrk if generator == "wrk" else run_httpx

    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        scratch = Path(tmp)
        url, described = prepare_database(args, scratch)
        dictionary_id, name, indices = pick_features(url)
        process, base = start_server(url, scratch, scratch / "server.log")
        try:
            print(f"database: {described}; dictionary {name} (id {dictionary_id}), {len(indices)} features rotated")
            print(
                f"load: {generator}, {args.clients} connections, {args.seconds:.0f} s per endpoint; the server "
                f"(one uvicorn process) and the load generator share this machine's {os.cpu_count()} cores"
            )
            if generator == "httpx":
                print(
                    "note: the Python client costs about as much CPU per request as the server's reference "
                    "endpoint, so the reference is client-bound and ratios understate the gap (apt-get install wrk)"
                )
            print(f"{'endpoint':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs reference':>13}")
            reference = None
            results = {}
            for endpoint in endpoints(dictionary_id, indices):
                warm_up(base, endpoint)
                load(base, endpoint, 1.0, args.clients, scratch)  # connections, the thread pool
                result = load(base, endpoint, args.seconds, args.clients, scratch)
                reference = reference or result
                results[endpoint.name] = result
                ratio = result.requests_per_s / reference.requests_per_s
                print(
                    f"{endpoint.name:<30} {result.requests_per_s:8.0f} {result.p50_ms:8.1f} {result.p99_ms:8.1f} "
                    f"{result.errors:7d} {ratio:13.2f}"
                )
        finally:
            process.terminate()
            process.wait(timeout=10)
    page = results["GET feature page"]
    page_ratio = page.requests_per_s / reference.requests_per_s
    verdict = "met" if page_ratio >= GOAL_PAGE_RATIO and page.p99_ms < GOAL_P99_MS else "NOT met"
    print(
        f"goal (feature page >= {GOAL_PAGE_RATIO} of the reference's throughput, p99 < {GOAL_P99_MS:.0f} ms): "
        f"{verdict} ({page_ratio:.2f}, p99 {page.p99_ms:.1f} ms)"
    )


if __name__ == "__main__":
    main()
