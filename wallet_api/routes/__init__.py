"""HTTP routes of the wallet API, one module per area."""
