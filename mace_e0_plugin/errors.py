"""The one exception the plugin raises for bad input."""


class E0InputError(SystemExit):
    """Bad input for the E0 estimate: one clear message that names the file or option and the fix.

    It derives from SystemExit, as argparse's errors do, because the hook runs inside mace's own
    command, whose ``main`` we do not own: uncaught, Python prints just the message and exits
    with status 1, with no traceback. Code that calls mace programmatically can catch it.
    """

    def __init__(self, message: str):
        super().__init__(f"mace-e0-plugin: error: {message}")
        self.message = message

    def __str__(self) -> str:
        return self.code
