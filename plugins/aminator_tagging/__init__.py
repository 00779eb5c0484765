"""The tagging finalizer: names, describes and tags baked images from their first package."""
