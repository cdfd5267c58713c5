"""
Internal redirect predicates (Envoy's C{extensions/internal_redirect}):
what a route's C{internal_redirect_policy.predicates} may use to refuse a
redirect's target route.
"""
