"""The SSH channel gate: slots are never leaked, whatever gets cancelled where."""

from __future__ import annotations

import asyncio

import pytest

from vexfs_cockpit.transport.ssh import _ChannelGate


async def test_waiters_get_slots_in_order_and_time_out() -> None:
    gate = _ChannelGate(1)
    await gate.acquire(1.0)
    got: list[int] = []

    async def take(n: int) -> None:
        await gate.acquire(5.0)
        got.append(n)

    waiters = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    for n in range(3):
        gate.release()
        await asyncio.sleep(0)
        assert got == list(range(n + 1))
    await asyncio.gather(*waiters)
    with pytest.raises(TimeoutError):
        await gate.acquire(0.01)
    assert gate.in_use == 1 and not gate._waiters


async def test_cancelled_holders_and_waiters_leak_nothing() -> None:
    """Tests are cancelled mid-command when their guard fires; every slot must come back."""
    gate = _ChannelGate(2)

    async def hold() -> None:
        await gate.acquire(5.0)
        try:
            await asyncio.sleep(10)
        finally:
            gate.release()

    tasks = [asyncio.create_task(hold()) for _ in range(6)]  # 2 holding, 4 queued
    await asyncio.sleep(0.01)
    assert gate.in_use == 2 and len(gate._waiters) == 4
    # Cancel the holders and, in the same tick, the waiters their release just woke.
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert gate.in_use == 0 and not gate._waiters
    await asyncio.wait_for(gate.acquire(0.1), 1.0)
    await asyncio.wait_for(gate.acquire(0.1), 1.0)
