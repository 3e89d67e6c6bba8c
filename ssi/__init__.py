"""Cartera's standards library: the formats and protocols the services speak.

Framework-free by rule: nothing in this package imports a web framework or a database driver,
so the same code runs in the issuer, the verifier, the wallet API, the CLI and the tests.
"""
