"""
Dynamic configuration (xDS): listeners and clusters that arrive after
start-up, from C{DiscoveryResponse} files today (C{path_config_source}).
"""
