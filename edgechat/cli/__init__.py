"""Floor 6, the command line: click commands that parse options, call the app layer and print."""
from edgechat.cli.main import cli, main

__all__ = ["cli", "main"]
