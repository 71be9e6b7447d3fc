"""fsar applications."""
