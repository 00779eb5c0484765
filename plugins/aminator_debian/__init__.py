"""The Debian family: distro detection, apt provisioning and mmdebstrap bootstrapping."""
