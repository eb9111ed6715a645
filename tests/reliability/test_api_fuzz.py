"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis): no input gives a 5xx.

Every operation of ``/openapi.json`` is called in-process with a bounded number of generated requests,
first valid ones (whose 2xx answers must also match the declared response schema), then invalid ones,
against an app over a builder-filled SQLite database. The run is derandomized and does not shrink, so it
is a bounded regression test; a failure names the operation and the request that broke it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

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
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, checks: list) -> None:
    """Call the operation with generated requests of one mode and run the checks on every response."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        case.validate_response(case.call(), checks=checks)

    call()


@pytest.mark.parametrize(
    ("mode", "checks"),
    [
        (GenerationMode.POSITIVE, [not_a_server_error, response_schema_conformance]),
        (GenerationMode.NEGATIVE, [not_a_server_error]),
    ],
    ids=["valid", "invalid"],
)
def test_no_generated_request_gets_a_server_error(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode, checks: list
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13  # every route of DESIGN.md's REST API is in the schema
    failures = []
    for operation in operations:
        try:
            fuzz(operation, mode, checks)
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # no parameters: nothing invalid to send
        except Exception as exc:  # collect all operations' failures, not only the first
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n\n".join(failures)
