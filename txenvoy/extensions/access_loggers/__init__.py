"""
Access loggers (Envoy's C{envoy.access_loggers.*}): file, stdout, stderr.
"""
