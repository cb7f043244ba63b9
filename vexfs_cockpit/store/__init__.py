"""The history store: every run, result, metric and kernel report, in SQLite.

- ``db.py``: where the file lives, creating it 0600, refusing foreign/corrupt files.
- ``schema.py``: tables and indexes as ordered forward migrations.
- ``recorder.py``: ``HistoryStore`` (the one writer thread) and ``Recorder`` (bus consumer).
- ``writer.py``: events -> rows; marks runs of dead processes aborted.
- ``history.py``: read queries (runs, trends, compare, crashes; the domains' HistoryView).
- ``report.py``: ``RunReport``, built from events (``ReportBuilder``) or from the DB.
"""
