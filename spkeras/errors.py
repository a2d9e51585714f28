"""User-facing errors: each carries one line that names the problem and what is supported.

The CLI prints the message on stderr and exits with status 2; no traceback is shown.
"""


class SpkerasError(Exception):
    """Base class of every error the CLI reports as a single line."""


class ModelError(SpkerasError):
    """A model file or in-memory model that cannot be imported or converted."""


class ConfigError(SpkerasError):
    """A nonsense option value (T ≤ 0, unknown method, …)."""
