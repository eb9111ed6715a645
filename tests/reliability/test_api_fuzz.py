"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis) with every check.

Every operation of ``/openapi.json`` is called in-process with a bounded number of generated requests,
first valid ones, then invalid ones, against an app over a builder-filled SQLite database, and every answer
goes through all of schemathesis's checks (as ``st run --checks all``): no 5xx, every status and content
type declared, bodies and headers as declared, valid requests accepted and invalid ones refused. The run is
derandomized and does not shrink, so it is a bounded regression test (about 20 s on 2 cores); a failure names
the operation and the request that broke it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from app.db.models import Dictionary
from app.services.schemas import ActivationsOut
from app.settings import Settings
from app.web.factory import create_app
from tests.app.builders import build_database

EXAMPLES_PER_OPERATION = 20
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


# Schema-valid requests two operations refuse, for reasons no static schema can state: /api/activations
# a feature past the dictionary's size or a text past the server's inspector_max_chars (422), and
# /api/labels/import a text body that is not CSV or JSONL of valid label rows (400, naming each line).
# Every other operation accepts what its schema allows.
FUZZ_CONFIG = SchemathesisConfig.from_str(
    """
[[operations]]
include-path = "/api/activations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

[[operations]]
include-path = "/api/labels/import"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]
"""
)


class NoTokenInspector:
    """The live inspector needs a trained run; fuzzing exercises the API around it, not the models."""

    def inspect(self, dictionary: Dictionary, text: str, feature: int | None = None) -> ActivationsOut:
        return ActivationsOut(dictionary_id=dictionary.id, feature=feature, tokens=[])


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(workdir=workdir, database_url=f"sqlite:///{workdir / 'fuzz.db'}"))
    app.state.inspector = NoTokenInspector()
    with app.state.sessionmaker() as session:
        build_database(session)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=FUZZ_CONFIG)


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
    """Call the operation with generated requests of one mode and run every check on every response."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        case.validate_response(case.call())  # no checks named: all of them

    call()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_generated_request_fails_a_check(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13  # every route of DESIGN.md's REST API is in the schema
    failures = []
    for operation in operations:
        try:
            fuzz(operation, mode)
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # no parameters: nothing invalid to send
        except Exception as exc:  # collect all operations' failures, not only the first
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n\n".join(failures)
