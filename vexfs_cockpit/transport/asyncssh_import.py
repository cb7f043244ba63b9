"""The one way this package imports asyncssh: ``from vexfs_cockpit.transport.asyncssh_import import asyncssh``.

asyncssh still names DSA types, and cryptography (>= 43) warns about each name at
import time: five ``CryptographyDeprecationWarning: DSA is deprecated`` lines on
stderr of every command that connects to a guest. Nothing here uses DSA keys
(the guests' keys are ed25519), so exactly that warning is silenced, for good
(asyncssh may touch the names again later); any other warning still shows.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

warnings.filterwarnings("ignore", message=r"DSA is deprecated", category=CryptographyDeprecationWarning)

import asyncssh  # noqa: E402  (after the filter, on purpose)

__all__ = ["asyncssh"]
