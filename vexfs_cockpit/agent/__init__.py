"""The kdev agent's client side: the socket protocol, the thin client that forwards a
warm-loop command, and the warm session (kept SSH connections) the server lends it."""
