"""netmon-exporter: network-traffic processor for Prometheus, Grafana and Alertmanager."""

__version__ = "0.1.0"
