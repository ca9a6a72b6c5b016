"""The evaluation: metrics, baselines, benchmark builders and importers, the runner (`run`, the
evaluate stage) and the report (`report`)."""
