"""Figure functions, one per figure, each returning a matplotlib ``Figure``."""
