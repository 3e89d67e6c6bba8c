"""ACA-Py plugin: JSON-LD contexts of Cartera's credential types, served from a local file.

This module runs INSIDE the ACA-Py process (``.venv-acapy``, Pydantic 1), so it imports nothing of
Cartera. ACA-Py 0.12 resolves JSON-LD contexts with ``DocumentLoader``: a static cache of seven
W3C/security contexts shipped in its package, then a live HTTP fetch for anything else. An agent that
must sign or verify a credential of a Cartera type would therefore fetch the type's context from the
issuer over the network on every cache miss (300 s TTL), and fail when offline. The runner writes the
generated contexts to a JSON file ``{url: document}`` and passes its path as
``--plugin-config-value cartera_contexts.file=PATH``; once the agent has started, this plugin puts a
loader in front of ACA-Py's that answers those URLs from the file, and hands every other URL on to
ACA-Py's own loader unchanged.

It also replaces ACA-Py's handler of present-proof 2.0 problem reports, which fails on a report
without a connection, so that a holder declining one of the verifier's connectionless requests is
recorded (:mod:`cartera_contexts.declines`).
"""

import json
import logging
import re

LOGGER = logging.getLogger(__name__)

_STARTUP_TOPIC = "acapy::core::startup"


def _load_file(path):
    with open(path, encoding="utf-8") as stream:
        data = json.load(stream)
    if not isinstance(data, dict):
        raise ValueError("contexts file must hold a JSON object {url: document}")
    return {
        url: {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": doc}
        for url, doc in data.items()
    }


async def setup(context):
    """Replace the problem report handler; register the startup hook (ACA-Py binds its DocumentLoader
    after plugins are set up)."""
    from aries_cloudagent.core.event_bus import EventBus

    from .declines import register

    register(context)
    config = (context.settings.get("plugin_config") or {}).get("cartera_contexts") or {}
    path = config.get("file")
    if not path:
        LOGGER.warning("cartera_contexts loaded without a 'file' setting; nothing pre-cached")
        return
    documents = _load_file(path)

    async def on_startup(profile, event):
        from aries_cloudagent.vc.ld_proofs.document_loader import DocumentLoader

        loader = profile.inject_or(DocumentLoader)
        if loader is None:
            LOGGER.error("cartera_contexts: no DocumentLoader bound; contexts not installed")
            return
        fallback = loader.requests_loader

        def load(url, options=None):
            found = documents.get(url)
            if found is not None:
                return found
            return fallback(url, options)

        loader.requests_loader = load
        LOGGER.info("cartera_contexts: %d context(s) installed", len(documents))

    context.inject(EventBus).subscribe(re.compile("^" + re.escape(_STARTUP_TOPIC) + "$"), on_startup)
