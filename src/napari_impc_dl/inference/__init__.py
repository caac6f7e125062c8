"""Tiled inference: tile planning, the batched/prefetching engine, and instance postprocessing."""
