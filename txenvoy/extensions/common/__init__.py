"""Code shared by several extensions (Envoy's C{extensions/common})."""
