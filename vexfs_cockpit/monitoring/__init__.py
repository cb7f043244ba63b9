"""Watching it run: Prometheus metrics computed from the history DB at scrape time
(``exporter``), alert rules over them and their check against a stored run
(``alerts``), and a Slack-compatible webhook for firing alerts (``webhook``).

A service: it reads ``store`` and the ``config`` models, and no front end.
"""
