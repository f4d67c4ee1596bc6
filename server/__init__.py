"""hermesd.server."""
