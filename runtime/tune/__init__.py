"""hermesd.runtime.tune."""
