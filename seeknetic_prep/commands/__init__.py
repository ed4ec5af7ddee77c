"""One module per CLI command: ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.

Command modules import their heavy dependencies inside ``main`` so that ``--help`` and the
emulator start without loading PyAV, and each command's flags live beside the code that uses
them rather than in one shared parser file.
"""

COMMANDS = ("prep", "plan", "run", "status", "results", "search", "inspect", "report", "prune", "emulator")
