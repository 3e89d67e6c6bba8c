"""Cartera verifier: OpenID4VP 1.0 presentation requests for agencies, strict verification, results.

See ``docs/verifier.md``. The FastAPI app is built by :func:`verifier.app.create_app`.
"""

__version__ = "0.1.0"
