"""`python -m llava.bench`: the benchmark's command line, with the one-line answers to expected failures."""

from .. import errors
from . import main

errors.entry_point(main)()
