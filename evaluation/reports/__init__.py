"""What a suite's records say: scores, normalization, aggregates with intervals, curves,
GIFs and the markdown report (`python -m evaluation compare`, `video`)."""
