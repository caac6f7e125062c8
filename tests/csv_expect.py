"""What the project's CSV files hold, written the slow, obvious way (for tests)."""

import numpy as np


def fifteen_digits(frame):
    """``frame`` with every float64 rounded to 15 significant digits, as ``printf("%.15g")`` rounds: pandas
    writes this copy exactly as :func:`napari_impc_dl.io.outputs.write_csv_atomic` writes the original."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == np.float64:
            out[name] = [float("%.15g" % v) for v in out[name]]
    return out
