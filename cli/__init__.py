"""hermesd.cli."""
