"""Report writers over a ``store.report.RunReport``: JUnit XML and the JSON result,
shared by `run --batch`, `ktest` and `history show`; ``output`` checks a report's path
before a run and writes the files atomically."""
