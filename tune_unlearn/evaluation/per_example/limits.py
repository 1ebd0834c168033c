"""What the per-example evaluation needs, importable without torch (the command line checks it
before anything heavy loads)."""

MIN_MODELS = 3  # models per ensemble: with fewer, no epsilon bin is left to score in
