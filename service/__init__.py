"""vigor-reward server: holds a policy model and scores completions with the VIGOR reward."""

__version__ = "0.1.0"
