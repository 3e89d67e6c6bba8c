"""docker-compose.yml, the Dockerfiles and the configuration reference, checked against the code.

No container engine runs in CI, so the compose file is validated structurally: every service has an
image or build, a health check and its environment; every variable it sets is one the service reads
(the settings class's fields under its prefix, or a variable the code or image documents); the image
holds every package; the documented configuration table is the one generated from the code.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from aries.runner import KEY_DERIVATION
from cartera.commands.config import SETTINGS, reference_markdown, reference_rows

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("issuer", "verifier", "wallet")
#: Variables read by something other than a settings class, and by whom (checked below).
PROCESS_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR": ROOT / "service_kit" / "metrics.py"}
PYTHON_VARIABLES = {"PYTHONUNBUFFERED"}  # read by the interpreter
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}  # the postgres image's


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _settings_envs(name: str) -> set[str]:
    return {row["env"] for row in reference_rows(name)}


def test_compose_has_every_part_of_the_system() -> None:
    assert {"postgres", "migrate", *APP_SERVICES, "sandbox", "acapy-issuer", "acapy-verifier"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_image_healthcheck_and_environment(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), name
    assert _env(service), f"{name} sets no environment"
    health = service.get("healthcheck")
    assert isinstance(health, dict), f"{name} has no healthcheck"
    if health.get("disable"):
        # only a one-shot job that the others wait for may go without one
        assert service.get("restart") == "no"
        waiting = [s for s in SERVICES.values()
                   if (s.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"]
        assert waiting, f"{name} disables its healthcheck but nothing waits for it to complete"
    else:
        test = health["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_read_every_variable_they_are_given(name: str) -> None:
    service = SERVICES[name]
    env = _env(service)
    known = _settings_envs(name) | set(PROCESS_VARIABLES)
    assert set(env) <= known, sorted(set(env) - known)
    prefix = f"CARTERA_{name.upper()}_"
    assert env[f"{prefix}DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env[f"{prefix}DATABASE_URL"].endswith(f"/cartera_{name}")
    assert f"{prefix}MASTER_KEY" not in env  # the master key comes as a file (compose secret), not a variable
    assert env[f"{prefix}MASTER_KEY_FILE"].startswith("/run/secrets/")
    assert env.get(f"{prefix}DEV_MODE", "false") == "false"
    assert env[f"{prefix}PUBLIC_URL"].split(":-", 1)[-1].startswith("https://")
    # the server command runs the service's app factory, which exists
    command = service["command"]
    factory = command[command.index("service_kit.server") + 1]
    module, _, attribute = factory.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    port = command[command.index("--port") + 1]
    assert env[f"{prefix}PORT"] == port and any(str(p).endswith(f":{port}") for p in service["ports"])
    assert port in " ".join(service["healthcheck"]["test"]) and "/readyz" in " ".join(service["healthcheck"]["test"])
    assert "--proxy-headers" in command  # TLS ends at the proxy: trust its X-Forwarded-* headers


def test_process_variables_are_read_by_the_code() -> None:
    for variable, source in PROCESS_VARIABLES.items():
        assert variable in source.read_text(encoding="utf-8")


def test_migrations_job_configures_each_service_database() -> None:
    env = _env(SERVICES["migrate"])
    every = set().union(*(_settings_envs(n) for n in APP_SERVICES))
    assert set(env) <= every
    assert {f"CARTERA_{n.upper()}_DATABASE_URL" for n in APP_SERVICES} == set(env)
    command = SERVICES["migrate"]["command"]
    assert command[:3] == ["cartera", "db", "upgrade"]
    # a one-shot job: it retries while the server still refuses connections instead of failing at once
    assert "--wait" in command and float(command[command.index("--wait") + 1]) >= 10
    for name in APP_SERVICES:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_other_containers_set_only_variables_their_software_reads() -> None:
    assert set(_env(SERVICES["postgres"])) <= POSTGRES_IMAGE_VARIABLES
    assert set(_env(SERVICES["sandbox"])) <= PYTHON_VARIABLES
    runner = (ROOT / "aries" / "runner.py").read_text(encoding="utf-8")
    acapy_reads = set(re.findall(r'"(ACAPY_[A-Z_]+)"', runner))
    for name in ("acapy-issuer", "acapy-verifier"):
        env = _env(SERVICES[name])
        assert set(env) <= acapy_reads, sorted(set(env) - acapy_reads)
        assert "ACAPY_ADMIN_API_KEY" in env and env["ACAPY_ADMIN_API_KEY"].startswith("${")  # from .env, not here
        command = SERVICES[name]["command"]
        assert command[0] == "start" and "--admin" in command and "--no-ledger" in command
        assert "--admin-insecure-mode" not in command
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile.acapy"


@pytest.mark.parametrize("name", ["acapy-issuer", "acapy-verifier"])
def test_acapy_agents_open_their_wallet_as_the_runner_does(name: str) -> None:
    """askar accepts only ``kdf:argon2i:int`` (``argon2i:int`` is "Invalid store key method": the agent
    crash-loops at start), the value aries.runner gives the agents it starts and tests against."""
    command = SERVICES[name]["command"]
    assert command[command.index("--wallet-key-derivation-method") + 1] == KEY_DERIVATION
    assert command[command.index("--wallet-type") + 1] == "askar"


def test_one_image_for_every_cartera_service() -> None:
    images = {SERVICES[n]["image"] for n in ("migrate", *APP_SERVICES, "sandbox")}
    assert images == {"cartera:latest"}
    for name in ("migrate", *APP_SERVICES, "sandbox"):
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile"


def test_dockerfile_copies_every_package_and_installs_pinned() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    assert packages <= copied, sorted(packages - copied)
    assert "-c constraints.txt" in dockerfile and "USER cartera" in dockerfile


def test_acapy_image_is_pinned_to_0_12() -> None:
    dockerfile = (ROOT / "Dockerfile.acapy").read_text(encoding="utf-8")
    pinned = re.search(r"aries-cloudagent\[[^\]]*\]==(\d+\.\d+\.\d+)", dockerfile)
    assert pinned and pinned.group(1).startswith("0.12.")
    constraints = (ROOT / "aries" / "constraints-acapy.txt").read_text(encoding="utf-8")
    assert f"aries-cloudagent=={pinned.group(1)}" in constraints
    assert (ROOT / "aries" / "acapy_plugins").is_dir() and "USER acapy" in dockerfile


def test_volumes_secrets_and_mounted_files_are_declared() -> None:
    declared_volumes = set(COMPOSE.get("volumes") or {})
    declared_secrets = set(COMPOSE.get("secrets") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                if source.startswith("./deploy/postgres"):
                    assert (ROOT / source).exists(), source
            else:
                assert source in declared_volumes, f"{name}: undeclared volume {source}"
        for secret in service.get("secrets") or []:
            assert secret in declared_secrets
    assert {"postgres-data", "cartera-data"} <= declared_volumes
    init = (ROOT / "deploy" / "postgres" / "init.sql").read_text(encoding="utf-8")
    for name in APP_SERVICES:
        assert f"CREATE DATABASE cartera_{name};" in init


def test_every_interpolated_variable_is_in_the_example_env() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0] for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, sorted(used - example)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_operations_doc_configuration_table_matches_the_code(name: str) -> None:
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    begin, end = f"<!-- config:{name}:begin -->", f"<!-- config:{name}:end -->"
    assert begin in doc and end in doc, f"docs/operations.md lacks the {name} table markers"
    table = doc.split(begin, 1)[1].split(end, 1)[0].strip()
    assert table == reference_markdown(name).strip(), (
        f"the {name} table in docs/operations.md is stale: regenerate it with "
        f"`cartera config reference --update-doc docs/operations.md`")


def _interpolate(value: str, example: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` with the example .env."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in example and example[name] != "":
            return example[name]
        if name in example and op == "-":  # ${NAME-default}: set but empty stays empty
            return ""
        return rest if op in (":-", "-") else ""
    return re.sub(r"\$\{([A-Z0-9_]+)(:-|:\?|-)?([^}]*)\}", one, value)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_builds_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    example = dict(line.split("=", 1) for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for variable in [v for v in os.environ if v.startswith("CARTERA_")]:
        monkeypatch.delenv(variable)
    env = {k: _interpolate(v, example) for k, v in _env(SERVICES[name]).items()}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    module, _, cls = SETTINGS[name].partition(":")
    settings = getattr(importlib.import_module(module), cls)()
    assert settings.public_url.startswith("https://") and settings.dev_mode is False
    assert settings.database_url == env[f"CARTERA_{name.upper()}_DATABASE_URL"]
    assert str(settings.master_key_file).startswith("/run/secrets/")


def _git_ignored(path: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    assert result.returncode in (0, 1), result
    return result.returncode == 0


def test_deployment_secrets_are_git_ignored() -> None:
    for path in (".env", "deploy/secrets/issuer-master.key", "deploy/pki/issuers-ca-key.pem",
                 "deploy/pki/relying-parties-ca-key.pem"):
        assert _git_ignored(path), f"{path} is not git-ignored"
    for path in ("deploy/env.example", "deploy/postgres/init.sql", "docker-compose.yml"):
        assert not _git_ignored(path), f"{path} is git-ignored"


def _dockerignore() -> set[str]:
    path = ROOT / ".dockerignore"
    assert path.is_file(), "no .dockerignore: the build context would carry .git, .env, keys and venvs"
    return {line.strip().rstrip("/") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")}


def test_docker_build_context_leaves_out_secrets_state_and_caches() -> None:
    patterns = _dockerignore()
    for required in (".git", ".env", "deploy/secrets", "deploy/pki", "var", ".venv*", "test-artifacts",
                     ".pytest_cache", "**/__pycache__"):
        assert required in patterns, f".dockerignore lacks {required}"
    # nothing the Dockerfiles copy is excluded
    copied = set()
    for dockerfile in ("Dockerfile", "Dockerfile.acapy"):
        text = (ROOT / dockerfile).read_text(encoding="utf-8")
        copied |= {part for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
                   for part in line.split()[:-1]}
    for source in copied:
        assert source.split("/")[0] not in patterns, f".dockerignore excludes {source}, which a Dockerfile copies"


def test_postgres_healthcheck_probes_tcp_not_the_init_servers_socket() -> None:
    test = SERVICES["postgres"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    # the image's init server answers on the unix socket only: a TCP probe waits for the real server
    assert "-h" in test and test[test.index("-h") + 1] in ("127.0.0.1", "localhost")


def _default(value: str) -> str:
    """A compose value with every ``${NAME:-default}`` / ``${NAME-default}`` replaced by its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", r"\1", value)


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """Host path -> container path of a service's bind mounts."""
    binds = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            binds[source] = target
    return binds


def test_ca_private_keys_are_mounted_only_where_used() -> None:
    keys = {"issuer": "./deploy/pki/issuers-ca-key", "verifier": "./deploy/pki/relying-parties-ca-key"}
    for name, service in SERVICES.items():
        binds = _binds(service)
        assert "./deploy/pki" not in binds, f"{name} mounts every CA private key"
        for source in binds:
            if "key" in source:
                assert keys.get(name) == source, f"{name} mounts {source}"
    for name in APP_SERVICES:
        binds = _binds(SERVICES[name])
        assert binds.get("./deploy/pki/certs") == "/etc/cartera/pki/certs"
        targets = list(binds.values())
        # every file a setting names under /etc/cartera/pki is inside one of the service's own mounts
        for variable, value in _env(SERVICES[name]).items():
            for path in re.findall(r"/etc/cartera/pki/[\w./-]+", _default(value)):
                assert any(path.startswith(target + "/") for target in targets), f"{name}: {variable}={path}"
    wallet = _binds(SERVICES["wallet"])
    assert set(wallet) == {"./deploy/pki/certs"}  # the two CA certificates, no key
    # a CA key the operator does not have: an empty variable in .env, which the settings read as none
    for name, variable in (("issuer", "CARTERA_ISSUER_CA_KEY_FILE"), ("verifier", "CARTERA_VERIFIER_RP_CA_KEY_FILE")):
        assert re.fullmatch(r"\$\{[A-Z_]+-/etc/cartera/pki/[^}]+\}", _env(SERVICES[name])[variable]), variable


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_forwarded_allow_ips_default_is_the_proxy_not_a_range() -> None:
    import ipaddress

    gateway = COMPOSE["networks"]["default"]["ipam"]["config"][0]["gateway"]
    for name in APP_SERVICES:
        command = SERVICES[name]["command"]
        allowed = _default(command[command.index("--forwarded-allow-ips") + 1])
        assert allowed == _default(gateway), allowed
        for entry in allowed.split(","):
            assert ipaddress.ip_network(entry, strict=False).num_addresses == 1, entry
    example = dict(line.split("=", 1) for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["FORWARDED_ALLOW_IPS"] == example["CARTERA_NETWORK_GATEWAY"]


def test_aries_agents_start_only_with_their_profile() -> None:
    for name in ("acapy-issuer", "acapy-verifier"):
        assert SERVICES[name].get("profiles") == ["aries"]
    for name in ("postgres", "migrate", *APP_SERVICES):
        assert not SERVICES[name].get("profiles")


def test_sandbox_advertises_a_reachable_host_and_the_wallet_callback() -> None:
    sandbox = SERVICES["sandbox"]
    command = sandbox["command"]
    assert command[command.index("--public-host") + 1] == "sandbox"
    redirect = _default(command[command.index("--redirect-uri") + 1])
    assert redirect.startswith("https://") and redirect.endswith("/v1/auth/callback")
    volumes = [v.split(":")[0] for v in sandbox.get("volumes") or []]
    assert "cartera-data" not in volumes and "sandbox-data" in volumes  # not the services' state


@pytest.mark.parametrize(("name", "variable", "field"), [("issuer", "ISSUER_CA_KEY_FILE", "ca_key_file"),
                                                         ("verifier", "VERIFIER_RP_CA_KEY_FILE", "rp_ca_key_file")])
def test_an_empty_ca_key_variable_means_no_ca_key(name: str, variable: str, field: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    example = dict(line.split("=", 1) for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    example[variable] = ""
    for existing in [v for v in os.environ if v.startswith("CARTERA_")]:
        monkeypatch.delenv(existing)
    for key, value in _env(SERVICES[name]).items():
        monkeypatch.setenv(key, _interpolate(value, example))
    module, _, cls = SETTINGS[name].partition(":")
    settings = getattr(importlib.import_module(module), cls)()
    assert getattr(settings, field) is None  # not Path(""), the working directory, read at the first use


def test_docs_make_key_files_readable_by_the_container_user_only() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert uid, "the Dockerfile's user has no fixed uid"
    assert f"chown {uid.group(1)}:{uid.group(1)} deploy/secrets" in doc  # bind mounts keep the host owner
    assert "chmod 0400 deploy/secrets" in doc
    # the documented generation command writes the key private from the first byte
    generation = next(line for line in doc.splitlines() if "token_hex(32)" in line and "deploy/secrets" in line)
    assert "umask 077" in generation, generation
    assert "read at start-up only" not in doc  # the issuer reads its CA key at tenant creation and rotation


def _apt_install(tmp_path: Path, sudo_works: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    """scripts/ensure-test-deps.sh's apt_install, run as a non-root user with stand-ins for id, sudo
    and apt-get that record how they were called."""
    script = (ROOT / "scripts" / "ensure-test-deps.sh").read_text(encoding="utf-8")
    function = re.search(r"^apt_install\(\) \{\n.*?^\}\n", script, re.MULTILINE | re.DOTALL)
    assert function, "ensure-test-deps.sh has no apt_install function"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    stubs = {"id": 'echo 1000', "apt-get": f'echo "apt-get $*" >> {log}',
             "sudo": (f'echo "sudo $*" >> {log}; [ "$1" = -n ] || exit 1; shift; '
                      'if [ "$1" = true ]; then exit 0; fi; shift; shift; "$@"') if sudo_works else "exit 1"}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "f.sh").write_text(function.group(0) + "apt_install softhsm2\n")
    return subprocess.run(["/bin/bash", str(tmp_path / "f.sh")], capture_output=True, text=True, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30), log


def test_test_deps_install_through_passwordless_sudo_when_not_root(tmp_path: Path) -> None:
    result, log = _apt_install(tmp_path, sudo_works=True)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert "apt-get install -y -qq --no-install-recommends softhsm2" in calls, calls
    assert any(c.startswith("sudo -n ") and "apt-get install" in c for c in calls), calls


def test_test_deps_say_why_when_neither_root_nor_sudo(tmp_path: Path) -> None:
    result, log = _apt_install(tmp_path, sudo_works=False)
    assert result.returncode == 1
    assert "sudo" in result.stderr and "apt-get install -y --no-install-recommends softhsm2" in result.stderr
    assert "apt-get" not in (log.read_text() if log.exists() else "")


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="no make")
@pytest.mark.parametrize(("present", "chosen"), [(("python3.11", "python3.12"), "python3.11"),
                                                 (("python3.13", "python3.12"), "python3.12"),
                                                 (("python3.13",), "python3.13"), ((), "")])
def test_acapy_python_falls_back_from_3_11(tmp_path: Path, present: tuple[str, ...], chosen: str) -> None:
    for name in present:
        (tmp_path / name).symlink_to(sys.executable)
    result = subprocess.run(["/usr/bin/make", "--no-print-directory", "-f", str(ROOT / "Makefile"),
                             "--eval", "show-acapy-python: ; @echo [$(ACAPY_PYTHON)]", "show-acapy-python"],
                            cwd=ROOT, capture_output=True, text=True, env={"PATH": str(tmp_path)}, timeout=30, check=False)
    assert result.stdout.strip() == f"[{chosen}]", result.stderr


def test_acapy_agents_get_the_contexts_file_their_plugin_reads() -> None:
    job = SERVICES["acapy-contexts"]
    assert job["command"][:3] == ["cartera", "aries", "contexts"]
    output = job["command"][job["command"].index("--output") + 1]
    written_volume = next(v.split(":")[0] for v in job["volumes"] if output.startswith(v.split(":")[1] + "/"))
    assert set(_env(job)) <= _settings_envs("issuer")
    for name in ("acapy-issuer", "acapy-verifier"):
        agent = SERVICES[name]
        command = agent["command"]
        assert "cartera_contexts" in command
        value = command[command.index("--plugin-config-value") + 1]
        assert value.startswith("cartera_contexts.file=")
        path = value.split("=", 1)[1]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in agent["volumes"]}
        mounted = [target for target in mounts if path.startswith(target + "/")]
        assert mounted and mounts[mounted[0]] == written_volume
        assert path.rsplit("/", 1)[1] == output.rsplit("/", 1)[1]
        assert agent["depends_on"]["acapy-contexts"]["condition"] == "service_completed_successfully"
