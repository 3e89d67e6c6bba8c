"""The Aries channel: ACA-Py sidecar agents, their admin API, webhooks, JSON-LD credentials, DIF proofs.

- :mod:`aries.runner` starts and stops ACA-Py processes (own virtualenv ``.venv-acapy``).
- :mod:`aries.client` is a typed async client of the admin API calls Cartera uses.
- :mod:`aries.webhooks` authenticates and de-duplicates the agent's webhook deliveries.
- :mod:`aries.jsonld` generates the JSON-LD context of a credential type and builds W3C VCs from it.
- :mod:`aries.presentation` builds DIF presentation definitions and applies our policies to results.
"""
