"""The server: lifecycle, workers, listener manager, options."""
