"""`python -m steps.foundations`: the foundation job (steps/foundations/job.py)."""

from steps.foundations.job import main

if __name__ == "__main__":
    main()
