"""The one exception type for bad user input: the message names the file, the line or key, and the value."""


class InputError(ValueError):
  """Input data or configuration is invalid; the message says where and why."""
