"""The bake pipeline: its declared steps over the host seam, and what they use (the package
cache, repositories, the secret scan, the SBOM, bake records and recovery)."""
