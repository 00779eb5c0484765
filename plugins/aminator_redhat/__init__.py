"""The RPM family plugin: RHEL, Rocky, AlmaLinux, CentOS Stream, Fedora and Amazon Linux roots,
provisioned with dnf."""
