"""hermesd.models."""
