"""Alembic environment of the verifier: everything is in service_kit.migrations.configure_env."""

from service_kit.migrations import configure_env
from verifier.models import Base

configure_env(Base.metadata, version_table="alembic_version")
