"""Alembic environment of the wallet API: everything is in service_kit.migrations.configure_env."""

from service_kit.migrations import configure_env
from wallet_api.models import Base

configure_env(Base.metadata, version_table="alembic_version")
