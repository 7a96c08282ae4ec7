"""The exceptions genrec raises. Every public function returns a valid result or raises one of these.

The CLI and the MCP server turn them into clean messages at one boundary; anything else that
escapes is a bug.
"""

from __future__ import annotations

__all__ = [
    "GenrecError",
    "CatalogError",
    "TemplateError",
    "SecurityError",
    "UnknownItemError",
    "ModelNotFoundError",
    "MissingDependencyError",
    "LimitError",
    "IndexCacheError",
    "DataError",
    "PriorError",
    "VocabularyError",
    "ConfigError",
    "DeadlineError",
]


class GenrecError(Exception):
    """Base class of every error genrec raises on purpose."""


class CatalogError(GenrecError):
    """A catalog file or table is malformed (names the file and row)."""


class TemplateError(GenrecError):
    """A prompt template is missing, does not parse, or fails to render (names file and line)."""


class SecurityError(TemplateError):
    """A template tried to reach something the sandbox forbids (Python internals, files, processes)."""


class UnknownItemError(GenrecError, KeyError):
    """One or more item IDs or titles are not in the catalog."""

    def __init__(self, message: str, unknown: list[str] | None = None):
        super().__init__(message)
        self.unknown = list(unknown or [])

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ModelNotFoundError(GenrecError):
    """The requested model (or the default model's package) cannot be found or loaded."""


class MissingDependencyError(GenrecError, ImportError):
    """An optional feature's package is not installed; the message says which extra brings it."""


def require(module: str, extra: str, feature: str) -> object:
    """``import module``, or a MissingDependencyError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{feature} needs the {module} package: pip install 'genrec[{extra}]'") from None


class LimitError(GenrecError, ValueError):
    """An argument is out of range: k, history length, request length, catalog size."""


class IndexCacheError(GenrecError):
    """A cached artefact (converted model, title index) is corrupt or does not match its content hash."""


class DataError(GenrecError):
    """An interaction log or evaluation dataset is malformed or missing."""


class PriorError(GenrecError, ValueError):
    """A collaborative prior of the wrong shape, with NaN or infinite scores, or a weight outside [0, 1]."""


class VocabularyError(GenrecError, ValueError):
    """An output vocabulary that is unknown, empty, or lacks a token the model is asked to write."""


class ConfigError(GenrecError, ValueError):
    """A setting or argument that no run could use: an unknown name, a value out of its range, or
    settings that contradict each other (names the setting)."""


class DeadlineError(GenrecError, TimeoutError):
    """A call ran past the deadline its caller set (``deadline=``); decoding stopped there."""
