"""The ground-truth tables every ``synth`` kind with a preset writes next to its images.

* ``truth.csv``: one row per image with the true values of exactly the columns the preset writes
  to ``counts.csv`` (same names), so a run is scored by joining the two on ``image``;
* ``objects_truth.csv``: ``image,label,class``, one row per object: the class of every label of
  ``masks/`` (also the CSV that ``train classification --level object`` reads).

``image`` is the file stem, as in the tables our verbs write.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from ..io.outputs import write_csv_atomic


def write_truth_tables(out: pathlib.Path, counts: Sequence[dict], objects: Sequence[tuple[str, int, str]]) -> None:
    """Write ``truth.csv`` and ``objects_truth.csv`` into ``out``, each atomically."""
    import pandas as pd

    write_csv_atomic(out / "truth.csv", pd.DataFrame(list(counts)))
    write_csv_atomic(out / "objects_truth.csv", pd.DataFrame(list(objects), columns=["image", "label", "class"]))
