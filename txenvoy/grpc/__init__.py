"""
gRPC clients for the services Envoy calls (collectors, authorization,
rate limit, access-log and metrics services, control planes).
"""
