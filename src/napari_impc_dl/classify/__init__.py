"""Classification: object crops and image resizing, the classifier Runnable, classify_images / classify_objects."""
