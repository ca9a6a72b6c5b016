"""Data: tiny raw-data synthesis (`synth`), curation of raw videos into a clip manifest (`curate`),
and the training dataset with latent-token index masks (`dataset`, `index_mask`)."""
