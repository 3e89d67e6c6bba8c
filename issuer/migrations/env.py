"""Alembic environment of the issuer: everything is in service_kit.migrations.configure_env."""

from issuer.models import Base
from service_kit.migrations import configure_env

configure_env(Base.metadata, version_table="alembic_version")
