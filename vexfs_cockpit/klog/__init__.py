"""Kernel-log classification: a table of report patterns (syzkaller's pkg/report way)
that turns console lines into titled WARN/oops/BUG/hang/lockup reports."""
