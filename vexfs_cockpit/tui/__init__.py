"""The Textual front end: the dashboard, history and trends screens over one
``CockpitBackend``; the only package that imports Textual."""
