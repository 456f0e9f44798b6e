"""Shared state: device records by intent, one module per backend, the write guard, blobs and logs."""
