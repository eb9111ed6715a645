"""Request dependencies shared by the REST routes and the pages: the session, settings, inspector, path ids."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.services.inspector import ActivationInspector
from app.services.schemas import MAX_SQL_INT
from app.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request, from the sessionmaker on ``app.state``; closed afterwards."""
    with request.app.state.sessionmaker() as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_inspector(request: Request) -> ActivationInspector:
    """The app's inspector, which keeps loaded models between requests."""
    return request.app.state.inspector


SessionDep = Annotated[Session, Depends(get_session)]

_DECIMAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def decimal_integer(value: Any) -> Any:
    """A path or query integer only as plain decimal digits: ``" 1"``, ``"1.0"``, ``"+1"``, ``"01"`` are refused.

    Pydantic would read them all as 1, so two addresses would name one feature and typos would pass.
    """
    if isinstance(value, str) and not _DECIMAL_INTEGER.fullmatch(value):
        raise ValueError("must be a whole number written in decimal digits, e.g. 12")
    return value


# After the Path or Query in an Annotated parameter (before it, the OpenAPI schema loses its bounds).
DECIMAL = BeforeValidator(decimal_integer)

DictionaryId = Annotated[int, Path(ge=1, le=MAX_SQL_INT, description="id from /api/dictionaries"), DECIMAL]


FeatureIndexParam = Annotated[
    int, Path(ge=0, le=MAX_SQL_INT, description="the feature's (latent's) index in the dictionary"), DECIMAL
]


T = TypeVar("T")


async def short_read(request: Request, read: Callable[..., T], *args: Any) -> T:
    """``read(*args)`` for a few indexed reads: inline on the event loop when the database is SQLite.

    A SQLite read of an indexed row takes tens of microseconds, less than the two thread hand-offs of a trip
    to the thread pool (which on 2 cores also fight over the GIL). A database server is a network round
    trip away, or hangs while it is down, so there the read goes to the thread pool as sync routes do.
    """
    if request.app.state.inline_reads:
        return read(*args)
    return await run_in_threadpool(read, *args)
