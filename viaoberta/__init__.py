"""The client side of SCSP v3 over Via Oberta: build, sign (WS-Security), verify and parse messages.

Modules: :mod:`viaoberta.products` (the catalogue of products and their ``DatosEspecificos``
shapes), :mod:`viaoberta.errors`, :mod:`viaoberta.xmlsafe` (hardened parsing), :mod:`viaoberta.messages`
(``Peticion`` building and ``Respuesta`` parsing), :mod:`viaoberta.wssecurity` (signing and
verification), :mod:`viaoberta.client` (the HTTP client) and :mod:`viaoberta.credentials`
(development RSA keys and certificates).
"""
