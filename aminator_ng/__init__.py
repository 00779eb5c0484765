"""aminator-ng: bake machine images in a chroot, without booting a builder instance."""

__version__ = "0.1.0"
