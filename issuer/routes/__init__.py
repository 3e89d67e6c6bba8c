"""HTTP routes of the issuer, one module per area: protocol (OpenID4VCI/OAuth), authorization, admin."""

#: The version prefix of the issuer's own (admin) API. The admin routers carry it themselves, so that
#: the app can list their routes flat (issuer.app) instead of behind include_router.
API_PREFIX = "/v1"
