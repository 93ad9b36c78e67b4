"""The one exception type for mistakes a user can make (bad paths, configs, inputs).

The CLI prints its message alone (no traceback) and exits with status 2.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that names the fix."""
