"""The systemd unit and environment file, shipped as package data for `hermesd install-service`."""
