"""Report writers over a ``store.report.RunReport``: JUnit XML and the JSON result,
shared by `run --batch`, `ktest` and `history show`."""
