"""Errors grukit raises for inputs it cannot handle. The CLI prints them as one line and exits 2."""


class GrukitError(Exception):
    """Base class: a problem with what the user gave grukit, not a bug in grukit."""


class UnsupportedModelError(GrukitError):
    """The model holds something grukit does not handle; the message names it."""


class BadInputError(GrukitError):
    """A file or argument is missing, malformed or inconsistent."""


class MissingDependencyError(GrukitError):
    """Something grukit was asked to do needs a package or tool that is not installed; the message names it."""
