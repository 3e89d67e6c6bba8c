"""An app factory as a service writes it, for the server test (``serve`` with several workers)."""

from __future__ import annotations

import os
from typing import ClassVar

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from service_kit.app import create_service_app
from service_kit.db import Database
from service_kit.settings import ServiceSettings


class SampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CARTERA_SAMPLE_")
    service_name: ClassVar[str] = "sample"


def create_app() -> FastAPI:
    settings = SampleSettings()
    app = create_service_app(
        name="sample", version="0.0.1", settings=settings, db=Database(settings.database_url)
    )

    @app.get("/v1/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app
