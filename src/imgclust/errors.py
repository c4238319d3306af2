"""Typed errors. Every message says what went wrong and what to do about it.

The CLI maps :class:`ImgclustError` to exit code 2 and prints its message; anything else
is a bug and exits 1.
"""

from __future__ import annotations


class ImgclustError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 2


class InputError(ImgclustError):
    """The images folder, a file or a label cannot be used."""


class ParameterError(ImgclustError, ValueError):
    """A parameter is out of range or unknown."""


class OutputError(ImgclustError):
    """An output folder or file cannot be written (permissions, disk full, unsafe place)."""


class MissingDependencyError(ImgclustError, ImportError):
    """An optional package is missing; the message names the pip command that installs it."""


class CacheError(ImgclustError):
    """An embedding cache is unusable (written by another extractor or a newer version)."""


def missing_dependency(package: str, extra: str | None = None, purpose: str = "") -> MissingDependencyError:
    """Build the error for a missing optional dependency, naming the command that installs it."""
    how = f'pip install "imgclust[{extra}]"' if extra else f"pip install {package}"
    what = f" for {purpose}" if purpose else ""
    return MissingDependencyError(f"The package '{package}' is needed{what} but is not installed. Install it with: {how}")
