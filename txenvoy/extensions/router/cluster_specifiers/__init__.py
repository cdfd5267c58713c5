"""Cluster specifier plugins: what picks a route's cluster per request."""
