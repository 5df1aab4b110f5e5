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


def run_main(main) -> None:
  """absl.app.run(main) for the launch scripts: bad input (InputError) and a --config override that names a
  key the config does not have end with a one-line message and exit status 2, not a traceback."""
  import sys

  from absl import app

  started = False

  def wrapped(argv):
    nonlocal started
    started = True
    return exit_on_input_error(main)(argv)

  try:
    app.run(wrapped)
  except (AttributeError, KeyError, ValueError) as e:
    if started:  # raised by the job itself: a bug, keep its traceback
      raise
    overrides = [a.split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--config")]
    what = f"the config has no key {e}" if isinstance(e, (AttributeError, KeyError)) else str(e)
    print(f"error: bad config: {what}; every key set by these flags must exist in the config file: "
          f"{', '.join(overrides) or 'none'}", file=sys.stderr)
    sys.exit(2)
