"""Decide what each array axis means: the letters ``T Z C Y X``.

Every opened image ends up with an axes string, one letter per array axis, in the array's own
order (``"YXC"`` for an RGB PNG, ``"TZCYX"`` for an ImageJ hyperstack). Readers pass what the
file's metadata says, with ``"?"`` for axes the metadata does not name; this module fills in the
rest and checks that the result is something the package can work on.

The rules, in order:

1. **Metadata first.** Letters the file states (OME, ImageJ, tifffile shape metadata, OME-Zarr
   ``axes``) are kept. tifffile's ``S`` (RGB samples) means ``C``; its ``Q``/``I`` (unknown,
   page sequence) count as unknown (``?``).
2. **No metadata at all** (``.npy``, plain zarr): a last axis of size 3 or 4 after two axes
   larger than 16 px is ``YXC`` (RGB(A) stored last); otherwise the last two axes are ``YX``.
3. **Unknown axes**, when there is no channel axis yet: a lone unknown axis of size <= 4
   becomes ``C`` (``(3, 512, 512)`` is ``CYX``, ``(10, 512, 512)`` is ``ZYX``); with two or more
   unknown axes, the last one becomes ``C`` if its size is <= 8 (``(10, 3, 512, 512)`` is
   ``ZCYX``, ``(5, 10, 512, 512)`` is ``TZYX``). The remaining unknown axes are stack axes: one
   is ``Z`` (``T`` if ``Z`` is taken), two are ``T`` then ``Z``.
4. **Override** with ``channel_axis``. ``Y``/``X`` are first placed as in rules 1-2. An int
   picks the channel axis by position (negative counts from the end); if that axis was taken for
   ``Y`` or ``X``, the last two other axes become ``YX`` instead. ``None`` means no channel
   axis. Either way every other axis (a former ``C`` included) is a stack axis, keeping a ``Z``
   or ``T`` the metadata gave it: ``(512, 512, 3)`` with ``None`` is ``YXZ``, three planes.

Supported result: ``Y`` and ``X`` (each >= 16 px), optionally ``C``, and at most two stack axes
(``Z``, ``T``), so at most 5 dimensions.
"""

from __future__ import annotations

import numbers

from ..errors import InputError

#: Smallest Y or X size accepted: below this no network tile makes sense.
MIN_SPATIAL = 16

_SUPPORTED = "supported are 2D images (YX), optionally with channels (C), a Z axis and a T axis"


def _shape_text(shape: tuple[int, ...], axes: str | None = None) -> str:
    dims = " x ".join(str(s) for s in shape)
    return f"shape ({dims})" + (f" with axes {axes}" if axes else "")


def resolve_axes(
    shape: tuple[int, ...],
    known: str | None,
    channel_axis: int | None | str,
    label: str,
) -> str:
    """Return the axes string (letters from ``TZCYX``) for an array of ``shape``.

    ``known`` is the metadata's axes with ``?`` for unnamed axes, or ``None`` when the file has no
    axes metadata; ``label`` names the file in error messages. Raises :class:`InputError` for
    anything the package cannot segment.
    """
    ndim = len(shape)
    if ndim < 2 or ndim > 5:
        raise InputError(
            f"{label} has {_shape_text(shape, known)}: {ndim}D data is not an image",
            f"Save it as an image with 2 to 5 dimensions; {_SUPPORTED}",
        )
    if 0 in shape:
        raise InputError(
            f"{label} is empty: {_shape_text(shape, known)}",
            "Check that the file was written completely and re-export it",
        )
    if known is not None and (len(known) != ndim or "Y" not in known or "X" not in known):
        known = None  # metadata that does not match the data, or names no Y/X, is no help
    if channel_axis == "auto":
        letters = list(known) if known is not None else _guess_yx(shape)
        letters = _fill_unknown(letters, shape, label)
    else:
        letters = _override(shape, known, channel_axis, label)
    axes = "".join(letters)
    _check(axes, shape, label)
    return axes


def _guess_yx(shape: tuple[int, ...]) -> list[str]:
    """Rule 2: place YX (or YXC) at the end of an array without metadata."""
    n = len(shape)
    if n >= 3 and shape[-1] in (3, 4) and shape[-2] > MIN_SPATIAL and shape[-3] > MIN_SPATIAL:
        return ["?"] * (n - 3) + ["Y", "X", "C"]
    return ["?"] * (n - 2) + ["Y", "X"]


def _fill_unknown(letters: list[str], shape: tuple[int, ...], label: str) -> list[str]:
    """Rule 3: turn ``?`` axes into C (if small and no C yet) and stack axes."""
    letters = list(letters)
    unknown = [i for i, a in enumerate(letters) if a == "?"]
    if unknown and "C" not in letters:
        last = unknown[-1]
        limit = 4 if len(unknown) == 1 else 8
        if shape[last] <= limit:
            letters[last] = "C"
            unknown = unknown[:-1]
    return _name_stack_axes(letters, unknown, shape, label)


def _name_stack_axes(letters: list[str], todo: list[int], shape: tuple[int, ...], label: str) -> list[str]:
    """Give the axes at positions ``todo`` the free stack letters (one: Z, two: T then Z)."""
    if not todo:
        return letters
    free = [a for a in "TZ" if a not in letters]
    if len(todo) > len(free):
        raise InputError(
            f"{label} has {_shape_text(shape, ''.join(letters))}: more than two stack axes "
            "besides Y, X and channels",
            f"Split the data into files with at most a Z and a T axis, or pass channel_axis; {_SUPPORTED}",
        )
    names = free if len(todo) == len(free) else ["Z" if "Z" in free else "T"]
    for i, name in zip(todo, names, strict=True):
        letters[i] = name
    return letters


def _override(shape: tuple[int, ...], known: str | None, channel_axis: object, label: str) -> list[str]:
    """Rule 4: the user said which axis is C (int) or that there is none (None)."""
    ndim = len(shape)
    if channel_axis is None:
        c = None
    elif isinstance(channel_axis, numbers.Integral) and not isinstance(channel_axis, bool):
        if not -ndim <= channel_axis < ndim:
            raise InputError(
                f"channel_axis={channel_axis} is out of range for {label}, which has {_shape_text(shape, known)}",
                f"Pass an axis index from {-ndim} to {ndim - 1}, None for no channels, or 'auto'",
            )
        c = int(channel_axis) % ndim
    else:
        raise InputError(
            f"channel_axis={channel_axis!r} is not understood (opening {label})",
            "Pass an axis index (int), None for no channel axis, or 'auto'",
        )
    base = list(known or _guess_yx(shape))  # Y/X where "auto" would put them (rules 1-2)
    if c is None:  # any channel axis becomes a stack axis
        letters = ["?" if a == "C" else a for a in base]
    elif base[c] not in "YX":  # keep Y/X, move C
        letters = ["?" if a == "C" else a for a in base]
        letters[c] = "C"
    else:  # the chosen axis was taken for Y or X: Y and X are the last two other axes
        rest = [i for i in range(ndim) if i != c]
        if len(rest) < 2:
            raise InputError(
                f"channel_axis={channel_axis} leaves no Y and X axes in {label} ({_shape_text(shape, known)})",
                "Pass the index of the channel axis, or None for no channels",
            )
        letters = ["?"] * ndim
        letters[rest[-2]], letters[rest[-1]], letters[c] = "Y", "X", "C"
        for i in rest[:-2]:  # keep Z/T names the metadata gave to the remaining axes
            if base[i] in "ZT" and base[i] not in letters:
                letters[i] = base[i]
    todo = [i for i, a in enumerate(letters) if a == "?"]
    return _name_stack_axes(letters, todo, shape, label)


def _check(axes: str, shape: tuple[int, ...], label: str) -> None:
    """Raise unless ``axes`` has one Y, one X, at most one C/Z/T, and a big enough YX plane."""
    counts = {a: axes.count(a) for a in set(axes)}
    if set(axes) - set("TZCYX") or any(n > 1 for n in counts.values()) or "Y" not in axes or "X" not in axes:
        raise InputError(
            f"{label} has {_shape_text(shape, axes)}, which cannot be read as one image",
            f"Re-export it or pass channel_axis; {_SUPPORTED}",
        )
    ny, nx = shape[axes.index("Y")], shape[axes.index("X")]
    if ny < MIN_SPATIAL or nx < MIN_SPATIAL:
        raise InputError(
            f"{label} has {_shape_text(shape, axes)}: the Y x X plane ({ny} x {nx}) is smaller "
            f"than {MIN_SPATIAL} px on a side",
            f"Check the axes (pass channel_axis if channels were taken for Y or X); {_SUPPORTED}",
        )
