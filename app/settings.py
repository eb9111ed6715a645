"""Settings of the server, read from the environment (prefix ``MONOSEMANTIC_``) or passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.db.session import default_database_url


class Settings(BaseSettings):
    """Where the run and the database are, how the server listens, and what guards writes."""

    model_config = SettingsConfigDict(env_prefix="MONOSEMANTIC_")

    workdir: Path = Field(Path("runs/default"), description="run directory whose artifacts the app reads")
    toy_workdir: Path | None = Field(
        None,
        description="a `monosemantic toy` --out folder whose figures the overview shows beside the LM's; "
        "default <workdir>/toy",
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default a SQLite file in the workdir")
    host: str = Field("127.0.0.1", description="address the server binds")
    port: int = Field(8000, ge=1, le=65535, description="port the server listens on")
    write_token: str | None = Field(None, description="when set, API writes need it as a Bearer token")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="torch device the live inspector computes on (auto picks CUDA when there is one)"
    )
    inspector_max_chars: int = Field(2000, gt=0, description="longest text the live inspector accepts")
    labels_import_max_bytes: int = Field(
        20 * 2**20, gt=0, description="largest body POST /api/labels/import accepts (413 past it)"
    )
    contrast_match_timeout_s: float = Field(
        10, gt=0, description="longest a contrast pattern may take to match the run's text (422 past it)"
    )
    contrast_timeout_s: float = Field(300, gt=0, description="longest a whole contrast search may take (503 past it)")
    json_body_max_bytes: int = Field(
        256 * 2**10, gt=0, description="largest JSON body the other API writes and searches accept (413 past it)"
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``monosemantic.db`` inside the workdir."""
        return self.database_url or default_database_url(self.workdir)
