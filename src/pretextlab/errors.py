"""One exception type for mistakes a user can fix; the CLI turns it into a single stderr line."""


class UserError(Exception):
    """Bad input: the message says what went wrong and what to do, in one line."""
