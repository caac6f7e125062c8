"""The mouse X-ray skeletal workflow (preset ``skeletal``): pose, regions, counts, the IMPC table.

    pose       where the head points and whether the picture is mirrored -> the standard view
               (head up, spine vertical, the mouse's left on the image's left), and back
    counting   vertebrae and ribs (instances) with their region and side -> the counts per IMPC parameter
    impc       the IMPC parameter table (long and wide), called against a strain's reference, with MP terms
    pipeline   one radiograph through the bundled models -> a :class:`~.pipeline.SkeletalResult`

No napari, no Qt; torch only inside the functions that run models.
"""
