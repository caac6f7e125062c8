"""Model construction (registry) and the checkpoint format (safetensors weights + JSON card).

Importing this subpackage imports torch; keep it out of start-up paths.
"""
