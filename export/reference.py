"""`python -m export.reference` of earlier releases: the research pipeline is `model.reference`."""

import sys

from model.reference import ResearchPipeline, main

__all__ = ["ResearchPipeline", "main"]

if __name__ == "__main__":
    sys.exit(main())
