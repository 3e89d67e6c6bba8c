"""HTTP routes of the issuer, one module per area: protocol (OpenID4VCI/OAuth), authorization, admin."""
