"""vexfs-cockpit: drive real VMs, run VexFS test domains, keep the history.

The plugin API is re-exported here so a user's domain needs one import line:
``from vexfs_cockpit import DomainBase, TestResult, TestStatus``.
"""

from vexfs_cockpit.engine.plugin import DomainBase, test_options
from vexfs_cockpit.engine.results import TestResult, TestStatus

__version__ = "0.1.0"

__all__ = ["DomainBase", "TestResult", "TestStatus", "test_options", "__version__"]
