"""``nas``: the command line and the Optuna orchestration of the RepVGG architecture search.

This is the only package that imports optuna and rich. Everything the CLI does is a Python call in
this package or below it (see the README's "From Python" section).
"""

__version__ = "0.1.0"
