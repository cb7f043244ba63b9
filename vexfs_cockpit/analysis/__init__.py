"""Regression intelligence over the history DB: what regressed, what is flaky, which
durations and metrics are out of line, which failures are known (issue 16).

Pure functions over the rows ``store.history.History.analysis_rows`` returns; the
command line is ``commands/analyze.py``, ``commands/baseline.py``, ``commands/expunge.py``.
"""
