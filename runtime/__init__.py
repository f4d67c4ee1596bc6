"""hermesd.runtime."""
