"""The kdev agent's SSH pool: one connection per VM instance and role, closed by the
pool (never by a borrower), replaced when the VM instance changes."""

from __future__ import annotations

from vexfs_cockpit.transport.pool import TargetPool


class FakeTarget:
    def __init__(self, name: str):
        self.name = name
        self.closed = 0
        self.reconnect_deadline_s = 60.0

    async def close(self) -> None:
        self.closed += 1


async def test_kept_per_instance_and_role_and_closed_only_by_the_pool() -> None:
    pool = TargetPool()
    made: list[FakeTarget] = []

    def make(name: str):
        def _make() -> FakeTarget:
            made.append(FakeTarget(name))
            return made[-1]
        return _make

    a = await pool.lend(("vm", "commands"), ("127.0.0.1", 4001, 7), make("a"))  # type: ignore[arg-type]
    await a.close()  # the command ends: the connection stays
    a.reconnect_deadline_s = 20.0  # settings pass through to the kept target
    again = await pool.lend(("vm", "commands"), ("127.0.0.1", 4001, 7), make("a2"))  # type: ignore[arg-type]
    assert [t.name for t in made] == ["a"] and again.name == "a" and made[0].closed == 0
    assert made[0].reconnect_deadline_s == 20.0

    hb = await pool.lend(("vm", "heartbeat"), ("127.0.0.1", 4001, 7), make("hb"))  # type: ignore[arg-type]
    assert hb.name == "hb" and len(pool) == 2

    # `vm reset` started a new instance (libvirt domain ID 8): the old connection is closed.
    fresh = await pool.lend(("vm", "commands"), ("127.0.0.1", 4001, 8), make("b"))  # type: ignore[arg-type]
    assert fresh.name == "b" and made[0].closed == 1

    await pool.aclose()
    assert [t.closed for t in made] == [1, 1, 1] and len(pool) == 0
    assert (pool.made, pool.lent) == (3, 4)
