"""The bench (`make bench`): the pipeline measured on the real local stack, against the original scripts."""
