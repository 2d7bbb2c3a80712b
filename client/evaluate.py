"""`python client/evaluate.py DATA`: how accurate the served model is on labelled speech.

The command line of ser_triton.evaluation (`ser-evaluate`, `make evaluate DATA=...`); its --help
says everything. Needs the evaluate extra: pip install '.[evaluate]'.
"""

import sys

try:
    from ser_triton.evaluation.cli import main
except ModuleNotFoundError as missing:
    sys.exit(f"client/evaluate.py: {missing.name} is not installed: run `pip install '.[evaluate]'` "
             "(or `make setup`) in the repository first")

if __name__ == "__main__":
    sys.exit(main())
