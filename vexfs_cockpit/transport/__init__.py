"""Ways to run commands on a Target: the guest over asyncssh (one kept connection per
VM) and the host as local processes."""
