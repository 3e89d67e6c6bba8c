"""Run a service under uvicorn from its app factory's import path (used by ``cartera run``).

The factory is given as an import string (``"issuer.app:create_app"``), not an app object, so that
``workers > 1`` works: each worker process imports and builds its own app, reading its configuration
from the environment. Everything a request needs lives in the database, so workers share nothing else.
"""

from __future__ import annotations

import importlib

import uvicorn

from .crypto import SecretBoxError
from .http_protocol import GatheringHttpToolsProtocol
from .settings import ConfigurationError


def serve(
    app_factory_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    log_level: str = "info",
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve the app built by the factory at ``app_factory_path`` until interrupted.

    uvicorn's own logging configuration is disabled (``log_config=None``) so the JSON logging set up by
    the app stays in charge, and uvicorn's access log (raw paths with query strings) is off.
    ``proxy_headers`` trusts ``X-Forwarded-*`` from ``forwarded_allow_ips`` (behind a load balancer).
    """
    if ":" not in app_factory_path:
        raise ValueError("app_factory_path must look like 'package.module:factory'")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    uvicorn.run(
        app_factory_path,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=None,
        access_log=False,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        # One send per response instead of two (service_kit.http_protocol).
        http=GatheringHttpToolsProtocol,
    )


def _listen_defaults(app_factory_path: str) -> tuple[str, int]:
    """Host and port from the settings of the factory's service (``CARTERA_<SERVICE>_HOST``/``_PORT``).

    The factory's module names the settings class it builds from as ``SETTINGS_CLASS``; it is imported
    here by name, so this package depends on no service. Without one: ``127.0.0.1:8000``.
    """
    module = importlib.import_module(app_factory_path.partition(":")[0])
    settings_class = getattr(module, "SETTINGS_CLASS", None)
    if settings_class is None:
        return "127.0.0.1", 8000
    settings = settings_class()
    return settings.host, settings.port


def _build_once(app_factory_path: str) -> None:
    """Build the app once in the starting process and throw it away.

    With several workers each one builds its own app, in a child process: a setting the factory refuses
    (an unreadable CA file, say) would then be reported by every worker with a traceback, and uvicorn's
    supervisor would replace the dead workers for ever. Building once here makes that a single
    ``configuration error`` line and a failed start. Building starts nothing: migrations, key tokens
    and background loops wait for the app's lifespan, which only the workers run.
    """
    module_name, _, factory_name = app_factory_path.partition(":")
    getattr(importlib.import_module(module_name), factory_name)()


def main(argv: list[str] | None = None) -> None:
    """``python -m service_kit.server package.module:factory [--host H] [--port P] [--workers N]``.

    How ``cartera run`` and containers start one service: configuration comes from the environment,
    the interface and port too (``CARTERA_<SERVICE>_HOST``/``_PORT``) unless ``--host``/``--port`` say.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m service_kit.server", description=main.__doc__)
    parser.add_argument("factory", help="import path of the app factory, e.g. issuer.app:create_app")
    parser.add_argument("--host", default=None, help="default: the service's CARTERA_<SERVICE>_HOST")
    parser.add_argument("--port", type=int, default=None, help="default: the service's CARTERA_<SERVICE>_PORT")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* (behind a proxy)")
    parser.add_argument("--forwarded-allow-ips", default=None)
    args = parser.parse_args(argv)
    if ":" not in args.factory:
        parser.error("the factory must look like 'package.module:factory'")
    from pydantic import ValidationError

    try:
        # The settings are read here even when --host and --port are given: a bad one is then reported
        # once, as one line, instead of from inside each uvicorn worker with a traceback.
        default_host, default_port = _listen_defaults(args.factory)
        host = default_host if args.host is None else args.host
        port = default_port if args.port is None else args.port
        if args.workers > 1:
            _build_once(args.factory)
        serve(args.factory, host, port, args.workers, log_level=args.log_level,
              proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips)
    except ValidationError as exc:
        # A bad setting: say which and why, without a traceback and never the value (it may be a secret).
        raise SystemExit(configuration_error_message(exc)) from None
    except ConfigurationError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    except SecretBoxError as exc:
        # Only the master key is opened while the app is built; its error says what is wrong with it.
        prefix = _env_prefix(args.factory)
        raise SystemExit(f"configuration error: the master key ({prefix}MASTER_KEY_FILE or {prefix}MASTER_KEY): "
                         f"{exc.detail}") from None


def _env_prefix(app_factory_path: str) -> str:
    """The environment prefix of the factory's settings (``CARTERA_ISSUER_``), or ``""``."""
    module = importlib.import_module(app_factory_path.partition(":")[0])
    settings_class = getattr(module, "SETTINGS_CLASS", None)
    return str(settings_class.model_config.get("env_prefix", "")).upper() if settings_class else ""


def configuration_error_message(exc: Exception) -> str:
    """What is wrong with the configuration, setting by setting, without the values given."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f"invalid configuration: {type(exc).__name__}"
    lines = [f"invalid configuration ({exc.title}):"]
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "(settings)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
