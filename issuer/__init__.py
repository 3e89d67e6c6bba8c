"""The issuer service: OpenID4VCI issuer and authorization server over the data sources (``issuer.sources``)."""
