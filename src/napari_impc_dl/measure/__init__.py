"""Measurements on label images: instance matching metrics, region properties, counts, tables."""
