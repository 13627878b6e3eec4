"""`python -m job`: run the fine-tuning job configured by FT_* environment variables."""

import sys

from job.cli import run

if __name__ == "__main__":
    sys.exit(run())
