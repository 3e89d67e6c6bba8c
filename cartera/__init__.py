"""The Cartera command line and composition root."""
