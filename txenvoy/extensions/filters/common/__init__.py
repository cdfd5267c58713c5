"""Code shared by the HTTP and network variants of a filter (Envoy's C{filters/common})."""
