"""The wiring layer: builds a session (config, provider, store, transport, runner) in one
place and offers the front ends what they need: runs, environments, VM actions, the
kdev warm loop."""
