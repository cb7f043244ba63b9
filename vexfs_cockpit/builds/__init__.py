"""Host-side builds: the module under test compiled against a guest kernel's headers."""
