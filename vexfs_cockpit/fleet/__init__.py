"""VM lifecycle on libvirt: define, boot, watch (console, samples, hang watchdog),
reset and destroy the guests, and lease them to the runner as Targets."""
