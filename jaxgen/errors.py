"""The one exception type for mistakes a user can make (bad paths, configs, inputs).

Messages name config fields by their ConfigDict path (``config.train.lr must be positive``) and
say "a new workdir", never a command-line flag: the library is also called from Python. The CLI
prints the message alone (no traceback), with the fields as the flags that set them
(``--config.train.lr``, see ``jaxgen.cli.as_flags``), and exits with status 2.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that names the fix."""
