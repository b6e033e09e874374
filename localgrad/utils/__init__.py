"""textgrad's `textgrad.utils` path: helpers around images."""
