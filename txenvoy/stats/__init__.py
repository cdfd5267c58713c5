"""Stats: counters, gauges and histograms with Envoy's names."""
