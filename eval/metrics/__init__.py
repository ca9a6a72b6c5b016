"""The metrics, one file each, found through the registry (`eval.registry`)."""
