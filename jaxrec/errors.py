"""The one exception type for bad user input: the message names the file, the line or key, and the value."""


class InputError(ValueError):
  """Input data or configuration is invalid; the message says where and why."""


def exit_on_input_error(main):
  """Wraps an absl main: bad input ends the run with its one-line message (exit status 2), not a trace."""
  import functools
  import sys

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped
