"""
Config validators (Envoy's C{envoy.config.validators.*}): checks an
C{ApiConfigSource}'s C{config_validators} run on each update of their
resource type before it applies.
"""
