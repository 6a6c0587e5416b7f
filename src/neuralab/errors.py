"""The one exception type for user mistakes.

A ``UserError`` is something the user can fix (a bad config key, missing data, a
corrupt file, a wrong checkpoint). The CLI prints its message as one line on
stderr and exits with status 2; any other exception is our bug and keeps its
traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""
