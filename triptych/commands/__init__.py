"""One module per top-level CLI command. Each module defines

    ORDER: int                      # position in `cli.py --help`
    def register(subparsers): ...   # adds its parser and sets `func=handler`

and imports torch/JAX/transformers inside its handlers only, so `cli.py --help` stays instant.
cli.py discovers the modules; adding a command never edits a shared file."""
