"""User-facing errors: the CLI and the app show their message, never a traceback."""


class HemlabError(Exception):
    """An error caused by input or environment that the user can fix; its message says how."""


class ModelError(HemlabError):
    """Unknown model name, unreadable folder, offline hub id, or a model too big for this machine."""


class CorpusError(HemlabError):
    """Unknown corpus, unreadable or empty text, or too few tokens for the requested budget."""


class SpecError(HemlabError):
    """An impossible setting: bits out of range, sparsity outside [0, 1), a group size that does not divide."""


class StoreError(HemlabError):
    """The results database is locked for too long, damaged, or unwritable. Stored results are never deleted."""


class CacheError(HemlabError):
    """A cached base reference failed its integrity check; the message names the folder and what was done."""


class TaskError(HemlabError):
    """An unknown task, a task entry or data file that cannot be read, or items that cannot be scored."""


class Cancelled(Exception):  # noqa: N818 (the name the pages and tests already use)
    """Raised between blocks or batches when the caller's cancel check returns True; nothing is stored.

    Not a HemlabError: a cancel is the user's choice, not a mistake to explain."""
