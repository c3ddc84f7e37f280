"""What the core reports: Prometheus metrics, ModelStatistics and the per-version observers that feed both."""
