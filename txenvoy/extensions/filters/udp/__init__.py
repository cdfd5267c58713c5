"""UDP listener filters (Envoy's C{envoy.filters.udp_listener})."""
