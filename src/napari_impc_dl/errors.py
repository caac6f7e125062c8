"""Errors a biologist can act on.

Every problem caused by the user's input (a file, a parameter, a folder) is raised as an
:class:`InputError`: one sentence saying what is wrong and where, and one saying what to do.
The CLI prints ``str(error)`` on one line and exits non-zero; the widgets show it in a
notification. Anything else that escapes is a bug in this package.
"""

from __future__ import annotations


class ImpcError(Exception):
    """Base class of this package's own errors."""


class InputError(ImpcError):
    """Bad input from the user: ``what`` went wrong (naming the file or value), ``hint`` says what to do."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what.rstrip(". ")
        self.hint = hint.strip()
        super().__init__(self.what + (f". {self.hint}" if self.hint else "."))


class Cancelled(ImpcError):
    """The run was cancelled through its :class:`CancelToken`; partial outputs have been removed."""


class CancelToken:
    """A thread-safe cancel flag handed to long-running core functions.

    The GUI (or a signal handler) calls :meth:`cancel`; the core calls :meth:`raise_if_cancelled`
    between units of work (tiles, blocks, images).
    """

    def __init__(self) -> None:
        import threading

        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")
