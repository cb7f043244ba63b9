"""CI sharding (issue 18 item 4): `run --batch --shard I/N` partitions the selection
deterministically and balanced by the durations in history."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.store import BACKENDS, T0, RunSpec, new_history, record_sync
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.plugin import TestOptions, TestSpec
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.engine.runner import selected_specs
from vexfs_cockpit.engine.shard import (
    DOMAIN_OVERHEAD_S,
    groups,
    parse_shard,
    plan_shards,
)
from vexfs_cockpit.errors import UsageError
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation

ROOT = Path(__file__).resolve().parents[2]


def _selection(seed: int = 1) -> dict[str, list[TestSpec]]:
    """Six domains of 6-14 tests; in each a chain of 2-3 tests joined by depends_on."""
    rnd = random.Random(seed)
    out: dict[str, list[TestSpec]] = {}
    for d in range(6):
        n = rnd.randint(6, 14)
        specs = []
        for i in range(n):
            deps = (f"t{i - 1:02d}",) if 0 < i < 3 else ()  # t00 <- t01 <- t02
            specs.append(TestSpec(name=f"t{i:02d}", method=f"test_t{i:02d}", options=TestOptions(depends_on=deps), order=i))
        out[f"dom{d}"] = specs
    return out


def _generated_history(path: StoreLocation, selection: dict[str, list[TestSpec]], seed: int = 2) -> dict[tuple[str, str], float]:
    """Five real recorded runs; each test's duration drawn once (0.2-40 s, long-tailed)
    and jittered per run. Returns what History should report (the median)."""
    rnd = random.Random(seed)
    base = {(d, s.name): round(rnd.lognormvariate(1.0, 1.1), 2) + 0.2 for d, specs in selection.items() for s in specs}
    # record_sync's runs give every test one duration per run: record one run per test
    # duration pattern by scaling the whole run (median of the 5 runs = the middle scale).
    specs = []
    for k, scale in enumerate((0.9, 1.0, 1.1, 0.95, 1.05)):
        for (d, t), dur in base.items():
            specs.append(RunSpec(f"r{k}-{d}-{t}", T0 + k * 10_000 + len(specs), outcomes={(d, t): TestStatus.PASSED},
                                 test_duration=round(dur * scale, 3)))
    record_sync(path, specs)
    return {k: round(v, 3) for k, v in base.items()}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend."""
    return new_history(request, tmp_path, "h.db")


def test_history_durations_feed_a_balanced_exact_partition(db: StoreLocation) -> None:
    selection = _selection()
    expected = _generated_history(db, selection)
    durations = History(db).test_durations([(d, s.name) for d, ss in selection.items() for s in ss])
    assert durations.keys() == expected.keys()
    assert all(abs(durations[k] - expected[k]) < 1e-6 for k in expected)  # the median run's scale is 1.0
    everything = {(d, s.name) for d, specs in selection.items() for s in specs}
    for n in (2, 3, 4, 5):
        plan = plan_shards(selection, durations, n)
        parts = [{(d, t) for d, ts in s.tests.items() for t in ts} for s in plan.shards]
        assert set().union(*parts) == everything  # nothing left out ...
        assert sum(len(p) for p in parts) == len(everything)  # ... nothing twice
        est = [s.estimate_s for s in plan.shards]
        assert max(est) <= 1.2 * min(est), (n, est)
        # the estimate is what the shard really costs: its tests plus one VM per domain
        for s in plan.shards:
            real = sum(durations[(d, t)] for d, ts in s.tests.items() for t in ts) + DOMAIN_OVERHEAD_S * len(s.tests)
            assert s.estimate_s == pytest.approx(real, abs=0.01)


def test_dependent_tests_share_a_shard_in_run_order() -> None:
    selection = _selection()
    plan = plan_shards(selection, {}, 4)
    for s in plan.shards:
        for ts in s.tests.values():
            assert list(ts) == sorted(ts)  # the domain's order
            chain = {"t00", "t01", "t02"} & set(ts)
            assert chain in (set(), {"t00", "t01", "t02"})
    g = [x for x in groups(selection, {}) if x.domain == "dom0"]
    assert g[0].tests == ("t00", "t01", "t02") and all(len(x.tests) == 1 for x in g[1:])


def test_same_inputs_same_shards_in_any_process() -> None:
    """No hash randomization, no dict-order luck: two interpreters with different hash
    seeds and the selection given in another order compute the same partition."""
    selection = _selection()
    durations = {(d, s.name): (i % 7) + 0.5 for d, specs in selection.items() for i, s in enumerate(specs)}
    here = plan_shards(selection, durations, 3)
    shuffled = dict(reversed(list(selection.items())))
    assert plan_shards(shuffled, dict(reversed(list(durations.items()))), 3) == here
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.unit.test_shard import _selection;"
        "from vexfs_cockpit.engine.shard import plan_shards;"
        "s = _selection(); d = {(k, x.name): (i % 7) + 0.5 for k, v in s.items() for i, x in enumerate(v)};"
        "print(plan_shards(s, d, 3).fingerprint)"
    )
    prints = {
        subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2", "12345")
    }
    assert prints == {here.fingerprint}


def test_real_domains_partition_exactly() -> None:
    """The installed domains through the runner's own selection (depends_on included)."""
    registry = discover_domains()
    selection = {d: selected_specs(cls) for d, cls in sorted(registry.items())}
    every = {(d, s.name) for d, ss in selection.items() for s in ss}
    for n in (1, 2, 6, len(every) + 3):  # more shards than groups: some are empty
        plan = plan_shards(selection, {}, n)
        got = [(d, t) for s in plan.shards for d, ts in s.tests.items() for t in ts]
        assert sorted(got) == sorted(every) and len(got) == len(every)


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/3", "2/4/1", "", "1/5000"])
def test_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_shard(text)
    msg = str(err.value)
    assert msg.startswith("--shard") and "\n" not in msg


def test_bad_shard_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/vexfs-cockpit"), "run", "--batch", "--shard", "5/4", "--db", str(tmp_path / "h.db")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["vexfs-cockpit: --shard: '5/4' is out of range: I/N needs 1 <= I <= N, e.g. --shard 1/4"]
    assert not (tmp_path / "h.db").exists()  # nothing started


def _tests_in(out: str) -> set[str]:
    return {ln.split("faults/", 1)[1].split(":", 1)[0] for ln in out.splitlines() if "faults/t" in ln and ": PASSED" in ln}


def test_batch_shards_of_a_real_run_cover_the_selection_once(tmp_path: Path) -> None:
    """The real CLI (the faults domain on the host): shards 1/2 and 2/2, each with its own
    copy of the same (empty) history as CI jobs have, run disjoint halves of the six
    tests; the shard is in the run's record; a shard with nothing to do passes."""
    from tests.support.faults import cockpit_batch

    seen = []
    for i in (1, 2):
        proc = cockpit_batch(tmp_path / f"h{i}.db", tmp_path / f"w{i}", "--shard", f"{i}/2", tests="6")
        assert proc.returncode == 0, proc.stderr
        assert f"shard {i}/2: 3 of 6 tests in 1 domain(s)" in proc.stdout
        seen.append(_tests_in(proc.stdout))
    assert seen[0] | seen[1] == {f"t0{k}" for k in range(1, 7)} and not seen[0] & seen[1]
    from vexfs_cockpit.store.history import History

    (run,) = History(tmp_path / "h2.db").list_runs()
    detail = History(tmp_path / "h2.db").run_detail(run.run_id)
    assert detail is not None and detail.run.provenance["shard"] == "2/2"
    # the CI job after the matrix: one history with both shards' runs
    from vexfs_cockpit.store.merge import import_history

    for i in (1, 2):
        import_history(tmp_path / "all.db", tmp_path / f"h{i}.db")
    merged = History(tmp_path / "all.db")
    assert sorted(t.name for r in merged.list_runs() for t in merged.run_detail(r.run_id).tests()) == [
        f"t0{k}" for k in range(1, 7)]
    proc = cockpit_batch(tmp_path / "h7.db", tmp_path / "w7", "--shard", "7/7", tests="6")
    assert proc.returncode == 0 and "shard 7/7: 0 of 6 tests" in proc.stdout, proc.stderr
    assert not _tests_in(proc.stdout)
