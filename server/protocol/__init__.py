"""hermesd.server.protocol."""
