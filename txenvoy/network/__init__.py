"""Downstream connections: listeners, listener filters, filter chains."""
