"""An example of a package that brings tune_unlearn a method of its own (grad_ascent.py)."""
