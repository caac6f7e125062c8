"""CSV text of a table, formatted column-wise in numpy instead of value by value in Python.

A 4096 x 4096 image has about 30,000 nuclei and ``objects.csv`` has 20 columns: 600,000 fields.
Python's ``repr`` of a float (pandas' formatting, and the previous writer's) costs 0.5-1 us, so
the file took 0.23-0.45 s on one core while the other had nothing to do. Here every column
becomes a matrix of ASCII digits made with numpy's integer arithmetic (NUL bytes where a field is
shorter than its column's widest), the matrices are laid side by side with commas, and the NULs
are squeezed out: 0.10-0.13 s for that table.

Format: what :meth:`pandas.DataFrame.to_csv` writes for the same table once its floats are
rounded to :data:`DIGITS` significant digits (tested byte for byte):

* integers: exact;
* floats: correctly rounded to 15 significant digits, written in their shortest form with one
  decimal kept (``2607.0``, ``0.5``, ``3.92982456140351``). That is what a spreadsheet keeps (Excel
  holds 15 significant digits) and far finer than any measurement of pixels; the tables in memory
  (API, napari) keep every bit. Values with ``1e-4 <= |v| < 1e15`` are formatted here; the rare
  tiny or huge values, and infinities, with Python's ``repr`` of the rounded value; NaN is an
  empty field (as pandas writes it);
* text: quoted as pandas (Python's ``csv`` module) quotes it, worked out once per distinct value.
"""

from __future__ import annotations

import csv
import io

import numpy as np

DIGITS = 15
"""Significant digits of floats in CSV files."""

_POW10 = 10 ** np.arange(20, dtype=np.uint64)
_COMMA, _ZERO, _DOT, _MINUS = (np.uint8(ord(c)) for c in ",0.-")


def csv_bytes(columns: list[tuple[str, np.ndarray]], linesep: str, header: bool = True) -> bytes:
    """The CSV text (UTF-8) of named 1-D columns of equal length: int, float64 or text (object / str) columns.

    Text must not contain NUL characters (they mark unused bytes here).
    """
    buf = io.StringIO()
    if header:
        csv.writer(buf, lineterminator=linesep).writerow([name for name, _ in columns])
    head = buf.getvalue().encode()
    n = len(columns[0][1]) if columns else 0
    if n == 0:
        return head
    fields = [_field(values) for _, values in columns]  # right-aligned in their matrices, NUL-padded
    sep = np.frombuffer(linesep.encode(), np.uint8)
    rows = np.zeros((n, sum(m.shape[1] + 1 for m in fields) - 1 + len(sep)), np.uint8)
    at = 0
    for k, mat in enumerate(fields):
        rows[:, at : at + mat.shape[1]] = mat
        at += mat.shape[1]
        if k < len(fields) - 1:
            rows[:, at] = _COMMA
            at += 1
    rows[:, at:] = sep
    return head + rows[rows != 0].tobytes()  # row by row, the NUL padding squeezed out


def _field(values: np.ndarray) -> np.ndarray:
    """A column as a uint8 matrix: each row's field right-aligned, NUL bytes to its left."""
    kind = values.dtype.kind
    if kind in "iu":
        return _ints(values)
    if kind == "f":
        return _floats(values.astype(np.float64, copy=False))
    return _texts(values)


def _n_digits(a: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative uint64 values (0 has one)."""
    return 1 + np.searchsorted(_POW10[1:], a, side="right")


def _digit_rows(a: np.ndarray, k: int) -> np.ndarray:
    """``(k, n)`` ASCII digits of uint64 ``a``: row ``i`` holds each value's ``i``-th digit from the right.

    Only divisions by a constant (numpy divides those fast; ``%`` and per-element divisors are 5-50 times slower).
    """
    out = np.empty((k, len(a)), np.uint8)
    x = a.copy()
    ten = np.uint64(10)
    for i in range(k):
        q = x // ten
        np.add(x - q * ten, _ZERO, out=out[i], casting="unsafe")
        x = q
    return out


def _ints(values: np.ndarray) -> np.ndarray:
    neg = values < 0 if values.dtype.kind == "i" else np.zeros(len(values), bool)
    a = np.where(neg, -(values + 1), values).astype(np.uint64) + neg  # |v| without overflowing at the minimum
    nd = _n_digits(a)
    w = int((nd + neg).max())
    digits = _digit_rows(a, int(nd.max()))
    mat = np.zeros((w, len(values)), np.uint8)  # transposed: each position is a contiguous row
    for r in range(w):  # r: position from the right
        row = mat[w - 1 - r]
        if r < len(digits):
            np.copyto(row, digits[r], where=r < nd)
        np.copyto(row, _MINUS, where=neg & (nd == r))
    return mat.T


def _round_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a * b`` rounded to the nearest integer (ties to even) as ``printf`` would round the exact product.

    The float product is itself rounded: near 1e15 its spacing is 1/8, so plain ``rint(a * b)``
    picks the wrong neighbour for about one value in five. Dekker's exact product (``p + err == a * b``)
    settles every case.
    """
    p = a * b
    split = 134217729.0  # 2**27 + 1
    ta, tb = split * a, split * b
    ah, bh = ta - (ta - a), tb - (tb - b)
    al, bl = a - ah, b - bh
    err = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    m = np.rint(p)
    r = (p - m) + err  # exact offset of the true product from m (|r| <= 0.5 + tiny)
    m += (r > 0.5).astype(m.dtype) - (r < -0.5)
    tie = np.abs(r) == 0.5
    m[tie] = 2 * np.rint((m[tie] + np.sign(r[tie]) * 0.5) / 2)  # between m and m +- 1: the even one
    return m


def _floats(values: np.ndarray) -> np.ndarray:
    """Fields ``[-]<int digits>.<decimals>``: ``m = round(|v| * 10**d)`` written with the point before its last
    ``d`` digits (``d`` decimals give :data:`DIGITS` significant digits), trailing zeros blanked (NUL)."""
    a = np.abs(values)
    fast = (a == 0) | ((a >= 1e-4) & (a < 1e15))  # NaN, infinities, tiny and huge values: repr
    a = np.where(fast, a, 0.0)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log10(np.where(a > 0, a, 1.0)))
    e += (a >= 10.0 ** (e + 1)).astype(e.dtype) - ((a < 10.0**e) & (a > 0))  # log10 can be off by one near powers of ten
    d = np.clip(DIGITS - 1 - e, 0, 18).astype(np.int64)
    m = _round_product(a, _POW10[d].astype(np.float64)).astype(np.uint64)
    nd = _n_digits(m)
    digits = _digit_rows(m, int(np.maximum(nd, d).max(initial=1)) + 1)  # zero-padded: "0.0015" has 4 decimals of m = 15
    shift = (d == 0).astype(np.int64)  # no decimals in m: the field ends in ".0"
    point = d + shift  # position of the point, from the right
    nint = np.maximum(nd - d, 1)  # digits before the point
    nonzero = digits[: int(d.max(initial=0))] != _ZERO
    tz = np.where(nonzero.any(axis=0), nonzero.argmax(axis=0), d) if len(nonzero) else np.zeros_like(d)
    blank = np.minimum(tz, point - 1)  # trailing zeros of the decimals, but one decimal stays
    neg = np.signbit(values) & fast
    lens = np.where(fast, point + 1 + nint + neg, 0)
    slow = np.flatnonzero(~fast)
    text = [("" if v != v else repr(float(f"%.{DIGITS}g" % v))).encode() for v in values[slow].tolist()]
    w = int(max(lens.max(initial=1), max(map(len, text), default=1)))
    mat = np.zeros((w, len(values)), np.uint8)  # transposed: each position is a contiguous row
    for r in range(w):  # r: position from the right
        row = mat[w - 1 - r]
        if r < len(digits):
            np.copyto(row, digits[r], where=(r < point) & (r >= blank) & (shift == 0))  # the decimals
        if 0 < r <= len(digits):
            np.copyto(row, digits[r - 1], where=(r > point) & (r <= point + nint) & (shift == 0))
        if 1 < r <= len(digits) + 1:
            np.copyto(row, digits[r - 2], where=(r > point) & (r <= point + nint) & (shift == 1))
        if r == 0:
            np.copyto(row, _ZERO, where=shift == 1)  # the "0" of ".0"
        np.copyto(row, _DOT, where=point == r)
        np.copyto(row, _MINUS, where=neg & (r == point + nint + 1))
    mat = mat.T
    mat[slow] = 0
    for i, t in zip(slow.tolist(), text):
        if t:
            mat[i, w - len(t) :] = np.frombuffer(t, np.uint8)
    return mat


def _texts(values: np.ndarray) -> np.ndarray:
    """Text fields quoted as pandas quotes them (NaN / None: empty), worked out once per distinct value."""
    import pandas as pd

    codes, uniques = pd.factorize(values)  # missing values get code -1
    encoded = []
    for v in list(uniques) + [""]:
        buf = io.StringIO()
        if v != "":
            csv.writer(buf, lineterminator="").writerow([str(v)])
        encoded.append(buf.getvalue().encode())
    w = max(1, max(map(len, encoded)))
    table = np.zeros((len(encoded), w), np.uint8)
    for k, t in enumerate(encoded):
        table[k, w - len(t) :] = np.frombuffer(t, np.uint8)
    return table[codes]  # code -1 picks the last entry: the empty field
