"""Errors that carry their fix: the CLI prints them as one line and exits 2."""


class PonderError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""


class UnsupportedModelError(PonderError):
    """The model's architecture has no adapter in `ponder.models.targets`."""


class DataError(PonderError):
    """Text data is missing, empty or too short for the requested protocol."""
