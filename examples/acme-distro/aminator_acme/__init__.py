"""aminator-acme: an example aminator-ng distro plugin for Acme Linux."""
