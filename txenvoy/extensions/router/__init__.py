"""Router extensions (Envoy's C{extensions/router})."""
