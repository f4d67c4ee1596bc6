"""hermesd.server.routes."""
