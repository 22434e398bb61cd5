"""How the memory becomes Label Studio predictions: the per-task predictor and its score, per-class thresholds,
the background refresh of the next tasks after a memory change, and bulk pre-labelling."""
