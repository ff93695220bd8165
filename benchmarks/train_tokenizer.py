"""Child: the tokenizer stage's training step (see :mod:`benchmarks.train_step`)."""

from benchmarks.common import child_main
from benchmarks.train_step import tokenizer_step as measure

if __name__ == "__main__":
    child_main(measure)
