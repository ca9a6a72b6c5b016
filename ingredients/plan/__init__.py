"""The cost plan: memory, FLOPs, time and GPU-hours of every GPU stage at its configured size,
measured on CPU under FakeTensorMode (no weights, no arithmetic)."""
