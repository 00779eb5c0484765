"""The image-hygiene finalizer: what no image for a fleet may carry from its bake."""
