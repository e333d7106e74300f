"""The one exception type for bad input, so the CLI can print it without a traceback."""


class VanEduError(ValueError):
    """Bad input to van_edu: the message says what was wrong and what was expected."""
