"""What the backend keeps on disk per project under MODEL_DIR: the memory and state files (atomic, locked),
the markers of accepted but unapplied events, and the in-flight waits built on them."""
