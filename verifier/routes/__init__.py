"""HTTP routes of the verifier, one module per area."""
