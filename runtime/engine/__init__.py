"""hermesd.runtime.engine."""
