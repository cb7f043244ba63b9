"""The kernel-log classifier against hand-made samples in Linux 6.1's exact formats.

Every title is asserted literally: dropping or breaking a row of the table in
``klog/patterns.py`` turns one of these red.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vexfs_cockpit.klog import patterns
from vexfs_cockpit.klog.classify import Classifier, classify_lines, classify_text, parse_line
from vexfs_cockpit.klog.model import Severity

SYNTH = Path(__file__).parent.parent / "data" / "klog" / "synthetic"

E, W, C, I = Severity.ERROR, Severity.WARNING, Severity.CRITICAL, Severity.INFO
MOD = "vexfs_selftest"

# file -> [(line, kind, title, severity, module)]
EXPECTED: dict[str, list[tuple[int, str, str, Severity, str | None]]] = {
    "warn.log": [(2, "warning", "WARNING in vexfs_selftest_warn_knob", W, MOD)],
    "oops.log": [(2, "oops", "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob", E, MOD)],
    "bug.log": [(2, "bug", "kernel BUG in vexfs_selftest_bug_knob", E, MOD)],
    "hung_task.log": [(2, "hung_task", "INFO: task hung in vexfs_selftest_hang_knob", E, MOD)],
    "soft_lockup.log": [(2, "soft_lockup", "BUG: soft lockup in vexfs_selftest_softlockup_knob", E, MOD)],
    "sysrq_panic.log": [(2, "panic", "Kernel panic - not syncing: sysrq triggered crash", C, None)],
    "clean_boot.log": [
        (66, "taint", "taint: out-of-tree module vexfs_selftest", I, MOD),
        (67, "taint", "taint: unsigned module vexfs_selftest", I, MOD),
    ],
    "kasan.log": [(1, "kasan", "KASAN: slab-out-of-bounds Write in vexfs_selftest_write_iter", E, MOD)],
    "kfence.log": [(1, "kfence", "KFENCE: use-after-free read in vexfs_selftest_uaf", E, MOD)],
    "lockdep.log": [(2, "lockdep", "possible deadlock in vexfs_selftest_lock_ab", E, MOD)],
    "ubsan.log": [(1, "ubsan", "UBSAN: array-index-out-of-bounds in vexfs_selftest_ubsan_knob", W, MOD)],
    "gpf.log": [(1, "gpf", "general protection fault in vexfs_selftest_evict_inode", E, MOD)],
    "oom.log": [(1, "oom", "out of memory: killed stress (oom-killer invoked by stress)", W, None)],
    "segfault.log": [
        (1, "segfault", "segfault in crashme", W, None),
        (3, "segfault", "invalid opcode in badop (user space)", W, None),
    ],
    "rcu_stall.log": [(1, "rcu_stall", "INFO: rcu detected stall in vexfs_selftest_spin", E, MOD)],
    "hard_lockup.log": [(1, "hard_lockup", "BUG: hard lockup in vexfs_selftest_irq_spin", C, MOD)],
    "kmemleak.log": [
        (1, "kmemleak", "kmemleak: 4096 new suspected memory leaks", E, None),
        (2, "kmemleak", "memory leak in vexfs_selftest_leak_alloc", E, MOD),
    ],
    # A REAL capture (Debian 6.1 guest under TCG, serial console, CRLF line ends): a static
    # binary segfaulting, hitting ud2 and allocating until the OOM killer fires; sysrq
    # w/l/m/q dumps (stack traces that are NOT reports); then sysrq c. With panic=-1 the
    # guest reset before `---[ end Kernel panic` reached the console: EOF flushes it.
    "real_guest_userfaults_sysrq.log": [
        (367, "segfault", "segfault in crashme", W, None),
        (369, "segfault", "invalid opcode in crashme (user space)", W, None),
        (370, "oom", "out of memory: killed crashme (oom-killer invoked by crashme)", W, None),
        (777, "panic", "Kernel panic - not syncing: sysrq triggered crash", C, None),
    ],
    "mixed_console.log": [
        (1, "taint", "taint: out-of-tree module vexfs_selftest", I, MOD),
        (2, "taint", "taint: unsigned module vexfs_selftest", I, MOD),
        (6, "warning", "WARNING in kmem_cache_destroy", W, MOD),
        (20, "hung_task", "INFO: task hung in vexfs_selftest_read_folio", E, MOD),
        (29, "oops", "BUG: kernel NULL pointer dereference in vexfs_selftest_timer_fn", E, MOD),
        (42, "panic", "Kernel panic - not syncing: Fatal exception in interrupt", C, None),
    ],
}


def _summary(path: Path) -> list[tuple[int, str, str, Severity, str | None]]:
    return [(r.line, r.kind, r.title, r.severity, r.module) for r in classify_text(path.read_text())]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_synthetic_sample(name: str) -> None:
    assert _summary(SYNTH / name) == EXPECTED[name]


def test_every_sample_has_expectations() -> None:
    assert sorted(p.name for p in SYNTH.glob("*.log")) == sorted(EXPECTED)


def test_every_kind_in_the_table_is_exercised() -> None:
    seen = {kind for rows in EXPECTED.values() for _, kind, *_ in rows}
    assert patterns.KINDS <= seen, f"no sample for {sorted(patterns.KINDS - seen)}: add one with the new row"


def test_report_spans_cut_here_to_end_trace() -> None:
    lines = (SYNTH / "warn.log").read_text().splitlines()
    (rep,) = classify_lines(lines)
    text = rep.text.splitlines()
    assert text[0].endswith("------------[ cut here ]------------")
    assert text[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert len(text) == len(lines) - 1  # everything but the knob's own pr_info before it


def test_oops_executive_summary_is_not_a_second_report() -> None:
    (rep,) = classify_text((SYNTH / "oops.log").read_text())
    assert rep.text.splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert "Oops: 0002 [#1]" in rep.text  # the Oops line is part of the BUG report, not its own


def test_hung_task_ends_at_task_close() -> None:
    (rep,) = classify_text((SYNTH / "hung_task.log").read_text())
    assert rep.text.splitlines()[-1].strip().endswith("</TASK>")
    assert "unhang" not in rep.text


def test_user_space_lines_inside_a_report_are_ignored() -> None:
    reports = classify_text((SYNTH / "mixed_console.log").read_text())
    warn = next(r for r in reports if r.kind == "warning")
    assert "can't kill pid" not in warn.text
    assert "kmem_cache_destroy vexfs_selftest_inode: Slab cache still has objects" in warn.text


BOOT_NOISE = [
    "[    0.000000] Command line: console=ttyS0 panic=-1 loglevel=7",
    "[    0.000000] Kernel command line: panic=-1 oops=panic softlockup_panic=0",
    "[    0.156000] ACPI BIOS Error (bug): Could not resolve symbol [\\_SB.PCI0.S08.PCNT], AE_NOT_FOUND",
    "[    0.157000] ACPI Error: Aborting method \\_SB.PCI0.S08.EJ0 due to previous error (AE_NOT_FOUND)",
    "[    0.160000] ACPI: _OSC evaluation for CPUs failed - This is not a bug.",
    "[    0.164000] PCI: Fatal: No config space access function found",
    "[    0.004000] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
    "[    0.004000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!",
    "[    0.132000] NMI watchdog: Perf NMI watchdog permanently disabled",
    "[    0.004000] rcu: Hierarchical RCU implementation.",
    "[    0.600000] hung_task: hung_task_timeout_secs set to 5",
    "CONFIG_BUG=y CONFIG_BUG_ON_DATA_CORRUPTION=y",
    "[    1.000000] i8042: Warning: Keylock active",
    "[    1.100000] Disabling lock debugging due to kernel taint",
    "[    1.200000] oom_reaper: reaped process 230 (stress), now anon-rss:0kB",
    "[    1.300000] watchdog: initial watchdog_thresh=2",
    "[    1.400000] random: crng init done",
    "[    1.500000] sysrq: Trigger a crash",
]


@pytest.mark.parametrize("line", BOOT_NOISE)
def test_boot_noise_raises_nothing(line: str) -> None:
    assert classify_lines([line]) == []


def test_clean_boot_yields_only_info_taint() -> None:
    reports = classify_text((SYNTH / "clean_boot.log").read_text())
    assert reports and all(r.kind == "taint" and r.severity is Severity.INFO for r in reports)


def test_same_report_in_dmesg_and_kmsg_formats() -> None:
    console = (SYNTH / "warn.log").read_text().splitlines()
    syslog = ["<4>" + ln for ln in console]  # dmesg -r / syslog prefix
    kmsg = []
    for ln in console:
        pl = parse_line(ln)
        assert pl.ts_us is not None
        kmsg.append(f"4,{len(kmsg) + 100},{pl.ts_us},-;{pl.body}")
    want = [(r.kind, r.title, r.module) for r in classify_lines(console)]
    assert want == [("warning", "WARNING in vexfs_selftest_warn_knob", MOD)]
    assert [(r.kind, r.title, r.module) for r in classify_lines(syslog)] == want
    assert [(r.kind, r.title, r.module) for r in classify_lines(kmsg)] == want


def test_parse_line_prefixes() -> None:
    pl = parse_line("[   12.345678] foo: bar\r\n")
    assert (pl.ts_us, pl.body) == (12_345_678, "foo: bar")
    pl = parse_line("<6>[    0.000001][    T1] x")
    assert (pl.ts_us, pl.body, pl.level) == (1, "x", 6)
    pl = parse_line("/ # [    5.100000] mounted")
    assert (pl.ts_us, pl.body) == (5_100_000, "mounted")
    assert parse_line("[   52.133421]  full_proxy_write+0x56/0x80").body == " full_proxy_write+0x56/0x80"
    assert parse_line("plain user output").ts_us is None


def test_quiet_gap_closes_a_report_without_end_marker() -> None:
    clf = Classifier(quiet_gap_s=2.0)
    assert clf.feed(0, "[   10.000000] BUG: scheduling while atomic: sh/12/0x00000002") == []
    assert clf.feed(1, "[   10.000100] Call Trace:") == []
    assert clf.open_since == 0
    done = clf.feed(2, "[   20.000000] e1000: eth0 NIC Link is Up")
    assert [(r.line, r.kind, r.title) for r in done] == [(0, "bug", "BUG: scheduling while atomic")]
    assert clf.open_since is None


def test_sync_marker_closes_an_open_report() -> None:
    clf = Classifier()
    clf.feed(0, "[   10.000000] INFO: task sh:9 blocked for more than 5 seconds.")
    clf.feed(1, "[   10.000100] Call Trace:")
    clf.feed(2, "[   10.000200]  vexfs_selftest_hang_knob+0x31/0x50 [vexfs_selftest]")
    done = clf.feed(3, "[   10.000300] vexfs-cockpit: run-1/dom/test_b")
    assert [(r.line, r.title, r.module) for r in done] == [(0, "INFO: task hung in vexfs_selftest_hang_knob", MOD)]
    assert "vexfs-cockpit" not in done[0].text


def test_back_to_back_reports_split_at_the_next_header() -> None:
    warn = (SYNTH / "warn.log").read_text().splitlines()[1:-1]  # no end-trace line
    bug = (SYNTH / "bug.log").read_text().splitlines()[1:]
    reports = classify_lines(warn + bug)
    assert [(r.line, r.kind) for r in reports] == [(1, "warning"), (len(warn) + 1, "bug")]
    # the cut-here line before `kernel BUG` went to the BUG report, not to the warning
    assert reports[0].text.count("cut here") == 1 and reports[1].text.count("cut here") == 1


def test_flush_emits_a_truncated_report() -> None:
    clf = Classifier(vm="vm0")
    clf.feed(7, "[    1.000000] ------------[ cut here ]------------")
    clf.feed(8, "[    1.000100] WARNING: CPU: 0 PID: 1 at fs/x.c:1 vexfs_a+0x1/0x2 [vexfs_selftest]")
    (rep,) = clf.flush()
    assert (rep.line, rep.title, rep.vm) == (7, "WARNING in vexfs_a", "vm0")
    assert clf.flush() == []


def test_guilty_frame_skips_scheduler_and_locking() -> None:
    lines = [
        "[    3.000000] INFO: task kworker/0:1:22 blocked for more than 120 seconds.",
        "[    3.000001] Call Trace:",
        "[    3.000002]  <TASK>",
        "[    3.000003]  __schedule+0x34d/0x9e0",
        "[    3.000004]  schedule+0x5a/0xd0",
        "[    3.000005]  schedule_preempt_disabled+0x11/0x20",
        "[    3.000006]  __mutex_lock.constprop.0+0x3b1/0x6a0",
        "[    3.000007]  rwsem_down_write_slowpath+0x1e/0x500",
        "[    3.000008]  vexfs_flush_work+0x2c/0x90 [vexfs]",
        "[    3.000009]  process_one_work+0x1c7/0x380",
        "[    3.000010]  worker_thread+0x4d/0x380",
        "[    3.000011]  kthread+0xe9/0x110",
        "[    3.000012]  ret_from_fork+0x22/0x30",
        "[    3.000013]  </TASK>",
    ]
    (rep,) = classify_lines(lines)
    assert (rep.title, rep.module) == ("INFO: task hung in vexfs_flush_work", "vexfs")


def test_modules_linked_in_is_not_the_guilty_module() -> None:
    lines = [
        "[    4.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    4.000001] Modules linked in: vexfs_selftest(OE) e1000",
        "[    4.000002] RIP: 0010:ext4_fill_super+0x1/0x2",
        "[    4.000003] Call Trace:",
        "[    4.000004]  mount_bdev+0x1/0x2",
        "[    4.000005] ---[ end trace 0000000000000000 ]---",
    ]
    (rep,) = classify_lines(lines)
    assert (rep.title, rep.module) == ("BUG: kernel NULL pointer dereference in ext4_fill_super", None)


def test_every_row_compiles_and_has_a_title() -> None:
    for p in patterns.PATTERNS:
        assert p.titles and p.kind in patterns.KINDS
        assert p.skip_re.match("dump_stack_lvl")  # the common skip set is always on
