"""``zoo test``: a package's own test inputs through our adapter, compared with its test outputs."""
