"""The one exception type the plugin raises for problems a user can fix."""


class MedakaError(Exception):
    """A problem with the user's input, files or environment.

    The message names the file or key, the value seen, what was expected and
    the fix. The CLI prints it on one line and exits with status 2; anything
    else that escapes is a bug and keeps its traceback.
    """
