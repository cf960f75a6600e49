"""The one exception type users see for bad input."""


class JnstError(ValueError):
  """Bad input or environment, with a one-line message saying what to do.

  Scripts print the message and exit with status 2 (no traceback). It subclasses
  ValueError so library callers can catch it as such.
  """
