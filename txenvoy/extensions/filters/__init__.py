"""Listener, network and HTTP filters."""
