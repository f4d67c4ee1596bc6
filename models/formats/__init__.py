"""hermesd.models.formats."""
