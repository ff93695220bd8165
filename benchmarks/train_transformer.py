"""Child: the transformer stage's masked-token training step (see :mod:`benchmarks.train_step`)."""

from benchmarks.common import child_main
from benchmarks.train_step import transformer_step as measure

if __name__ == "__main__":
    child_main(measure)
