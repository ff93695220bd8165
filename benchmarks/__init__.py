"""Speed and memory benchmarks of magvit (not part of the timed test suite). Run ``python -m benchmarks``."""
