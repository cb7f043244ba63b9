"""The kdev agent: a warm interpreter that runs the warm-loop commands for thin clients."""
