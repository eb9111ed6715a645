"""A contrast search whose pattern backtracks forever cannot stall the server (``monosemantic serve``).

The search runs in the server's worker process: the pattern gets a clear 422 once it passes its matching
time limit, a second search meanwhile gets a 503 saying to retry, and ``/api/health`` keeps answering fast.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from app.services.contrast_worker import ContrastTimedOut, ContrastWorker, SearchLimits
from tests.reliability.conftest import ServedApp, start_server, stop_server
from training.data.corpus import Corpus, Document
from training.data.tokenizer import TokenizeConfig, tokenize_corpus
from training.features.contrast import ContrastConfig

MATCH_LIMIT_S = 2
HEALTH_LIMIT_S = 0.1
# (a|aa)+ tries every way to split a run of a's before it gives up: Fibonacci(40) steps at one position.
CATASTROPHIC = "(?:a|aa)+[[b]]"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedApp:
    workdir = tmp_path_factory.mktemp("contrast_worker")
    sentences = ["The cat sat on the mat. ", "A dog ran to the park! ", "x" + "a" * 40 + "! "]
    documents = [Document(doc_id=str(i), genre="test", text="".join(sentences) * 3) for i in range(20)]
    tokenize_corpus(Corpus(documents, "test"), workdir / "tokens", TokenizeConfig(vocab_size=300), progress=False)
    # The pattern never gets past matching the text, so the LM is never read: only its presence is checked.
    (workdir / "lm").mkdir()
    (workdir / "lm" / "model.safetensors").write_bytes(b"")
    env = {"MONOSEMANTIC_CONTRAST_MATCH_TIMEOUT_S": str(MATCH_LIMIT_S)}
    served = start_server(f"sqlite:///{workdir / 'contrast.db'}", workdir, env)
    yield served
    stop_server(served)


def test_a_catastrophic_pattern_is_stopped_while_health_stays_fast(served: ServedApp) -> None:
    answer: dict[str, httpx.Response] = {}

    def search() -> None:
        body = {"a": CATASTROPHIC, "b": "[[cat]]"}
        answer["contrast"] = httpx.post(f"{served.base_url}/api/contrast", json=body, timeout=60)

    started = time.monotonic()
    thread = threading.Thread(target=search)
    thread.start()
    latencies, busy = [], None
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        time.sleep(0.5)  # let the search take the worker
        busy = client.post("/api/contrast", json={"a": "[[cat]]", "b": "[[dog]]"})
        while thread.is_alive():
            before = time.perf_counter()
            assert client.get("/api/health").status_code == 200
            latencies.append(time.perf_counter() - before)
            time.sleep(0.02)
    thread.join()
    elapsed = time.monotonic() - started

    response = answer["contrast"]
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "a"] and f"within {MATCH_LIMIT_S} s" in error["msg"]
    # Spawning the worker and reading the text come first; the pattern then has MATCH_LIMIT_S.
    assert elapsed < MATCH_LIMIT_S + 20, served.log()
    assert busy.status_code == 503 and busy.headers["retry-after"] and "try again" in busy.json()["detail"]
    assert len(latencies) >= 10
    assert max(latencies) < HEALTH_LIMIT_S, sorted(latencies)[-5:]


def test_a_nested_repeat_is_refused_before_it_runs(served: ServedApp) -> None:
    started = time.monotonic()
    response = httpx.post(f"{served.base_url}/api/contrast", json={"a": "(?:a+)+[[b]]", "b": "[[cat]]"}, timeout=10)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "a"]
    assert "exponential" in response.json()["detail"][0]["msg"]
    assert time.monotonic() - started < 1


def test_a_search_past_its_total_limit_is_stopped_and_its_process_killed(served: ServedApp) -> None:
    workdir = served.log_path.parent  # the run the server searches
    worker = ContrastWorker(SearchLimits(match_s=600, total_s=2))
    started = time.monotonic()
    with pytest.raises(ContrastTimedOut, match="MONOSEMANTIC_CONTRAST_TIMEOUT_S"):
        worker.search(workdir, CATASTROPHIC, "[[cat]]", ContrastConfig(max_positions=20))
    assert time.monotonic() - started < 2 + 5  # the limit, then the kill and join
    assert not worker.running  # killed: the next search starts a fresh one
