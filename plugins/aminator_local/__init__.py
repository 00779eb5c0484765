"""The local cloud backend: images in a SQLite store, volumes as loop devices over raw files."""
