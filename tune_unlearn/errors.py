"""The one exception type for input a user can fix, and the one for a run that diverged."""


class UserError(Exception):
    """Bad input: the command line prints the message as one line and exits with status 2.

    Raised before any expensive work (training, Ray start-up) wherever possible, and always
    naming the bad value and what is allowed.
    """


def one_of(what: str, value, allowed) -> UserError:
    """The usual 'unknown X' error: names the bad value and lists what is allowed."""
    return UserError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")


class Diverged(RuntimeError):
    """The loss became NaN or infinite: the run cannot produce meaningful metrics."""
