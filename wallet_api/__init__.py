"""Cartera wallet API: the citizen's cloud wallet (login, encrypted vault, OpenID4VCI client,
OpenID4VP responder with consent, history, alerts, backups)."""

__version__ = "0.1.0"
