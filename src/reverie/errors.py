"""User-facing errors: the CLI prints their message and exits without a traceback."""


class ReverieError(Exception):
    """A problem the user can fix (bad config, missing file, nothing to roll back to)."""


class ConfigError(ReverieError):
    """reverie.yaml (or a --set override) holds a value that is not allowed."""
