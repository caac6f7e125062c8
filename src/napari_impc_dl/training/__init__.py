"""Training segmentation models: targets from instance masks, the loop, validation metrics."""
