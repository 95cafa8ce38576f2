"""The failures backfill can report, each mapped once to an exit code at the edge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

if TYPE_CHECKING:
    from backfill.result import Result


def reason_of(exc: BaseException) -> str:
    """Why a value was refused, as text: a ValidationError's messages joined, else the error's
    own text. Characters that are not printable (a newline or tab in a value the message
    quotes) are shown escaped, so the reason stays on the one line it is quoted in.
    """
    text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(exc: BaseException) -> str:
    """An error's text on one line (database messages carry DETAIL and HINT lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class BackfillError(Exception):
    """Base class of every error backfill raises on purpose."""

    exit_code = 1


class BadInput(BackfillError):
    """The request cannot run as given; nothing was written."""

    exit_code = 2


class InsideTransaction(BadInput):
    """Chunked commits were requested inside an outer ``atomic()`` block."""


class ChunkFailed(BackfillError):
    """A chunk kept failing. Everything before it is committed and checkpointed."""

    exit_code = 1

    def __init__(self, message: str, *, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


class TransformFailed(ChunkFailed):
    """The transform raised on one row; its chunk was rolled back."""

    def __init__(self, message: str, *, pk: Any, error: BaseException) -> None:
        super().__init__(message)
        self.pk = pk
        self.error = error


class ValueRejected(ChunkFailed):
    """A new value cannot be stored in its column as given; its chunk was rolled back."""

    def __init__(self, message: str, *, pk: Any, field: str) -> None:
        super().__init__(message)
        self.pk = pk
        self.field = field


class RowFailed(ChunkFailed):
    """The database refused one row of a chunk (a constraint, a value); the chunk rolled back."""

    def __init__(self, message: str, *, pk: Any) -> None:
        super().__init__(message)
        self.pk = pk


class Interrupted(BackfillError):
    """The run stopped early and can resume: a signal, --max-runtime, pause or cancel."""

    exit_code = 3

    def __init__(self, message: str, *, result: Result) -> None:
        super().__init__(message)
        self.result = result


class RunBusy(BackfillError):
    """Another live process holds this run."""

    exit_code = 4


class BackfillIncomplete(BackfillError):
    """A required run is not completed, or verification still finds rows needing its change."""

    exit_code = 1
