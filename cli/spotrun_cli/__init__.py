"""spotrun's command line client: `python -m spotrun_cli --help`."""

__version__ = "0.1.0"
