"""
Listener filters (Envoy's C{envoy.filters.listener.*}), each registered by
its C{typed_config} C{@type}: they run on an accepted socket before a
filter chain is chosen.
"""
