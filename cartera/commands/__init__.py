"""Command groups of the `cartera` CLI, one module per group."""
