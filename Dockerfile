# One image for every Cartera service (issuer, verifier, wallet API, sandbox, migrations):
# docker-compose.yml picks the service with the container command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt build-constraints.txt README.md ./
COPY ssi ssi
COPY credential_schemas credential_schemas
COPY viaoberta viaoberta
COPY sandbox sandbox
COPY service_kit service_kit
COPY issuer issuer
COPY verifier verifier
COPY wallet_api wallet_api
COPY aries aries
COPY cartera cartera
RUN python -m venv /opt/cartera \
    && /opt/cartera/bin/pip install --no-cache-dir -q 'pip==26.3' \
    && /opt/cartera/bin/pip install --no-cache-dir -q -c constraints.txt --build-constraint build-constraints.txt .

FROM python:3.11-slim
# An unprivileged user; state lives in /var/lib/cartera (a named volume), secrets come mounted read-only.
RUN useradd --system --uid 10001 --home-dir /var/lib/cartera --create-home cartera
COPY --from=build /opt/cartera /opt/cartera
ENV PATH=/opt/cartera/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER cartera
WORKDIR /var/lib/cartera
# `python -m service_kit.server` listens where CARTERA_<SERVICE>_HOST/_PORT say (--host/--port override
# them); docker-compose.yml sets 0.0.0.0 and each service's port.
EXPOSE 8001 8002 8003 8004 8005
CMD ["cartera", "--help"]
