from service_kit.migrations import configure_env
from tests.service_kit.sample_models import Base

configure_env(Base.metadata, version_table="alembic_version_sample")
