"""The ``pdfnet`` command's subcommands. Each module is one job: ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit status``; it parses and checks its flags and calls the library, nothing more."""

# subcommand -> module, in the order ``pdfnet --help`` lists them
COMMANDS = {
    "predict": "predict",
    "label": "label",
    "train": "train",
    "finetune": "finetune",
    "test": "test",
    "depth": "depth",
    "evaluate": "evaluate",
    "export": "export",
    "convert": "convert",
    "serve": "serve",
}
