"""The engine: the typed event stream, the runner, the plugin API domains build on, the
Target and provider protocols, and the per-test kernel-log window."""
