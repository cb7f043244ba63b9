"""A domain with a fault knob per test, for the confirmation tests on a real guest
(tests/vm/test_confirm_vm.py): installed there as a third-party plugin through the
``vexfs_cockpit.domains`` entry point, as a user's own domain would be.

``options.probe`` (``--set domains.knob.options.probe=MODE``):

- ``pass``: passes (the default);
- ``fail``: fails on every attempt;
- ``odd``: fails on the 1st, 3rd, ... attempt on one guest, counted in a file in the
  guest's /tmp: deterministic, so a fresh VM starts counting again.
"""

from __future__ import annotations

from vexfs_cockpit.plugin import DomainBase, TestResult, TestStatus, option

COUNTER = "/tmp/vexfs-knob-probe.count"


class KnobDomain(DomainBase):
    """A fault knob per test (options.probe: pass | fail | odd), for the confirmation tests."""

    name = "knob"

    async def test_probe(self) -> TestResult:
        mode = str(option(self, "probe", "pass"))  # not on/off: YAML reads those as booleans
        res = await self.target.run(
            f"n=$(( $(cat {COUNTER} 2>/dev/null || echo 0) + 1 )); echo $n > {COUNTER}; echo $n", check=True)
        n = int(res.output.strip())  # our own counter: a number, or check=True failed above
        bad = mode == "fail" or (mode == "odd" and n % 2 == 1)
        return TestResult(status=TestStatus.FAILED if bad else TestStatus.PASSED,
                          message=f"attempt {n} on this guest, knob probe={mode}")
