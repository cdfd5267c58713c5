"""Envoy v3 configuration: loading, validation and compilation."""
