"""The table of kernel report kinds: one row per kind of report, no if-chains.

Modelled on syzkaller's ``pkg/report/linux.go``: each row says how a report starts
(``header``, matched at the start of a line's message, after the ``[  12.345678]``
timestamp), how it ends, how to title it and which stack frames are never "the
guilty function". Adding a new kind of report is adding a row to ``PATTERNS``.

Title formats are ``str.format`` strings. Their fields come from, in increasing
priority: ``func`` (the first stack frame, RIP first, that no skip regex matches)
and ``module``; the header's named groups; the ``details`` regexes searched over
the whole report. The first format whose fields are all known wins.

Severity policy (decided here, documented in one place):
- CRITICAL: the guest is (probably) dead: panic, hard lockup, double fault.
- ERROR: a kernel bug that leaves the guest running: oops, BUG, GPF, KASAN, KFENCE,
  soft lockup, hung task, RCU stall, lockdep, memory leak. A fatal oops is followed
  by its own ``Kernel panic - not syncing: Fatal exception`` report (CRITICAL).
- WARNING: WARN_ON splats, UBSAN, OOM kills, user-space segfaults. These still fail
  a test (anything above INFO does) unless the test declares it expects them, but
  they rank below an actual crash.
- INFO: taint notices. Loading our unsigned out-of-tree module taints the kernel
  by design, so it is recorded and never fails a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vexfs_cockpit.klog.model import Severity

# -- building blocks --------------------------------------------------------------
FUNC = r"(?P<func>[A-Za-z_.$][\w.$]*)"
OFFSET = r"\+0x[0-9a-f]+/0x[0-9a-f]+"
# `foo+0x3c/0x70 [vexfs_selftest]` after a header's function name: the module, if any.
MODULE_SUFFIX = r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?:\s+\[(?P<module>[\w-]+)\])?"

# `RIP: 0010:vexfs_selftest_warn_knob+0x15/0x20 [vexfs_selftest]`; a user-space RIP
# (`RIP: 0033:0x4b2c51`) has no symbol and does not match.
RIP_RE = re.compile(r"^\s*RIP: [0-9a-f]{4}:(?P<func>[A-Za-z_.$][\w.$]*)" + OFFSET + r"(?:\s+\[(?P<mod>[\w-]+)\])?")
# ` vexfs_selftest_hang_knob+0x30/0x50 [vexfs_selftest]`, `    [<000000001>] kmalloc_trace+0x26/0x90`
# and the unreliable ` ? foo+0x1/0x2` (group q set: never guilty).
FRAME_RE = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?P<q>\?\s+)?(?P<func>[A-Za-z_.$][\w.$]*)" + OFFSET + r"(?:\s+\[(?P<mod>[\w-]+)\])?"
)
STACK_START_RE = re.compile(r"^\s*(?:Call Trace:|backtrace(?: \(crc [0-9a-f]+\))?:)")
# Compiler clones: foo.isra.0, foo.constprop.0, foo.cold, foo.part.1 -> foo.
FUNC_SUFFIX_RE = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.\d+)?)+$")

END_TRACE = re.compile(r"^---\[ end trace [0-9a-f]+ \]---")
END_TASK = re.compile(r"^\s*</TASK>\s*$")
END_ANY = re.compile(END_TRACE.pattern + "|" + END_TASK.pattern)
END_RULE = re.compile(r"^={20,}\s*$")  # KASAN/KFENCE/UBSAN reports are boxed in ===== lines
END_PANIC = re.compile(r"^---\[ end Kernel panic")

# Lines that open a report only if a header follows within a few lines.
PRE_HEADER_RE = re.compile(r"^(?:-{12}\[ cut here \]-{12}|={20,})\s*$")
PRE_HEADER_SPAN = 4
# Written by KernelLogBuffer.sync: a test boundary, so it always ends an open report.
SYNC_MARKER = "vexfs-cockpit: "

# -- frame skip sets (regexes matched at the start of the function name) -----------
COMMON_SKIP: tuple[str, ...] = (
    r"dump_stack", r"show_stack", r"show_regs", r"show_trace", r"__warn", r"warn_slowpath",
    r"report_bug", r"handle_bug", r"exc_", r"asm_exc_", r"do_error_trap", r"do_trap",
    r"panic$", r"__panic", r"_?printk", r"vprintk", r"__die", r"die$", r"oops_",
    r"page_fault_oops", r"kernelmode_fixup_or_oops", r"_*bad_area", r"do_user_addr_fault",
    r"handle_page_fault", r"_*ubsan_", r"_*kasan", r"__asan", r"kfence_", r"check_memory_region",
    r"_*mem(?:cpy|set|move|cmp)", r"_*str(?:len|nlen|cmp|ncmp|cpy|scpy|lcpy|ncpy|chr)\b",
    r"_*copy_(?:to|from)_user", r"copy_user", r"rep_movs", r"lock_acquire", r"lock_release",
    r"_*raw_spin", r"do_raw_spin", r"spin_", r"__might_(?:sleep|resched|fault)", r"might_fault",
    r"__list_(?:add|del)", r"_*x86_indirect_thunk", r"__x86_return_thunk",
)
# Hung tasks: the victim sleeps in the scheduler; the guilty frame is what made it sleep.
HANG_SKIP: tuple[str, ...] = (
    r"_*schedule", r"io_schedule", r"_*wait_for_common", r"wait_for_completion", r"_*wait_event",
    r"__wait_", r"wait_", r"usleep_range", r"msleep", r"schedule_hrtimeout", r"_*mutex_lock",
    r"mutex_", r"_*down", r"rwsem_", r"_*rwsem", r"_*rt_mutex", r"_*percpu_down", r"context_switch",
    r"_*switch_to", r"finish_task_switch", r"_*synchronize_", r"kthread", r"ret_from_fork",
    r"worker_thread", r"do_syscall_64", r"entry_SYSCALL_64", r"ksys_", r"__x64_sys_", r"__se_sys_",
    r"__do_sys_", r"vfs_(?:read|write)$", r"full_proxy_(?:read|write)",
)
# Soft lockups / RCU stalls: the CPU spins; skip delay loops, lock spinning and the
# interrupt that caught it.
STALL_SKIP: tuple[str, ...] = (
    r"delay_tsc", r"delay_halt", r"_*const_udelay", r"_*udelay", r"_*delay$", r"_*mdelay",
    r"cpu_relax", r"rep_nop", r"native_", r"queued_spin", r"_*pv_queued", r"asm_sysvec",
    r"_*sysvec_", r"_*hrtimer", r"watchdog_timer_fn", r"_*irq_exit", r"_*do_softirq",
    r"irqentry_", r"_*common_interrupt", r"rcu_", r"_*rcu_", r"do_syscall_64", r"entry_SYSCALL_64",
    r"ksys_", r"__x64_sys_", r"vfs_(?:read|write)$", r"full_proxy_(?:read|write)",
)
LEAK_SKIP: tuple[str, ...] = (
    r"_*kmalloc", r"kmem_", r"_*kmem_cache", r"kzalloc", r"kcalloc", r"krealloc", r"_*vmalloc",
    r"kvmalloc", r"_*slab", r"kmemleak", r"create_object", r"_*alloc_", r"kstrdup", r"kmemdup",
)
LOCKDEP_SKIP: tuple[str, ...] = (r"_*lock", r"_*mutex", r"_*down", r"_*up_", r"_*rcu", r"lockdep")


@dataclass(frozen=True, slots=True)
class ReportPattern:
    """One row: a kind of kernel report."""

    kind: str
    header: re.Pattern[str]
    titles: tuple[str, ...]
    severity: Severity
    end: re.Pattern[str] | None = END_TRACE  # None: ends at the next header, gap or flush
    skip: tuple[str, ...] = ()
    details: tuple[re.Pattern[str], ...] = ()
    single_line: bool = False
    # False: when another report is open this line is part of it ("Oops: 0002 [#1]"
    # after "BUG: kernel NULL pointer dereference"), like syzkaller's reportStartIgnores.
    nests: bool = True
    skip_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_re", re.compile("(?:" + "|".join(COMMON_SKIP + self.skip) + ")"))


def row(
    kind: str,
    header: str,
    titles: str | tuple[str, ...],
    severity: Severity,
    *,
    end: re.Pattern[str] | None = END_TRACE,
    skip: tuple[str, ...] = (),
    details: tuple[str, ...] = (),
    single_line: bool = False,
    nests: bool = True,
) -> ReportPattern:
    return ReportPattern(
        kind=kind,
        header=re.compile(header),
        titles=(titles,) if isinstance(titles, str) else titles,
        severity=severity,
        end=end,
        skip=skip,
        details=tuple(re.compile(d, re.MULTILINE) for d in details),
        single_line=single_line,
        nests=nests,
    )


C, E, W, I = Severity.CRITICAL, Severity.ERROR, Severity.WARNING, Severity.INFO
_ACCESS_AT = r"at: (?P<func>[A-Za-z_.$][\w.$]*)\+0x"

# Order matters: the first row whose header matches wins (specific before generic).
PATTERNS: tuple[ReportPattern, ...] = (
    # -- the guest is going down -----------------------------------------------------
    row("panic", r"Kernel panic - not syncing: (?P<reason>.*?)\s*$",
        "Kernel panic - not syncing: {reason}", C, end=END_PANIC),
    row("hard_lockup", r"(?:NMI )?[Ww]atchdog: Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)",
        ("BUG: hard lockup in {func}", "BUG: hard lockup on cpu {cpu}"), C, end=END_TASK, skip=STALL_SKIP),
    row("oops", r"PANIC: double fault", ("PANIC: double fault in {func}", "PANIC: double fault"), C),
    # -- stalls and hangs --------------------------------------------------------------
    row("soft_lockup",
        r"(?:watchdog: )?BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<secs>\d+)s! \[(?P<comm>.+?):(?P<pid>\d+)\]",
        ("BUG: soft lockup in {func}", "BUG: soft lockup on cpu {cpu}"), E, end=END_TASK, skip=STALL_SKIP),
    row("rcu_stall", r"(?:rcu: )?INFO: rcu_(?:preempt|sched|bh) (?:self-)?detected(?: expedited)? stalls?",
        # No end marker: "detected stalls on CPUs/tasks" dumps several stacks (the GP
        # kthread's, then where it last ran / NMI backtraces); next header or gap ends it.
        ("INFO: rcu detected stall in {func}", "INFO: rcu detected stall"), E, end=None,
        skip=STALL_SKIP + HANG_SKIP),
    row("hung_task", r"INFO: task (?P<comm>.+):(?P<pid>\d+) blocked for more than (?P<secs>\d+) seconds",
        ("INFO: task hung in {func}", "INFO: task {comm} hung"), E, end=END_TASK, skip=HANG_SKIP),
    # -- lockdep (before the generic WARNING/BUG rows) -----------------------------------
    row("lockdep",
        r"(?:WARNING|INFO): (?:possible circular locking dependency|possible recursive locking"
        r"|possible irq lock inversion dependency|SOFTIRQ-safe -> SOFTIRQ-unsafe lock order) detected",
        ("possible deadlock in {func}", "possible deadlock"), E, end=END_TASK, skip=LOCKDEP_SKIP,
        details=(_ACCESS_AT,)),
    row("lockdep",
        r"(?:WARNING|BUG|INFO): (?P<what>inconsistent lock state|bad unlock balance|held lock freed"
        r"|lock held when returning to user space|suspicious RCU usage|trying to register non-static key)",
        ("{what} in {func}", "{what}"), E, end=END_TASK, skip=LOCKDEP_SKIP, details=(_ACCESS_AT,)),
    # -- memory checkers -----------------------------------------------------------------
    row("kasan", r"BUG: KASAN: (?P<bugtype>[\w-]+) in " + FUNC + MODULE_SUFFIX,
        ("KASAN: {bugtype} {access} in {func}", "KASAN: {bugtype} in {func}"), E, end=END_RULE,
        details=(r"(?P<access>Read|Write) of size \d+",)),
    row("kfence", r"BUG: KFENCE: (?P<bugtype>[\w -]+?) in " + FUNC + MODULE_SUFFIX, "KFENCE: {bugtype} in {func}", E, end=END_RULE),
    row("ubsan", r"UBSAN: (?P<what>[\w-]+(?: [\w-]+)*?) in (?P<src>\S+)",
        ("UBSAN: {what} in {func}", "UBSAN: {what} in {src}"), W, end=END_RULE),
    row("kmemleak", r"kmemleak: (?P<n>\d+) new suspected memory leaks?",
        "kmemleak: {n} new suspected memory leaks", E, single_line=True),
    row("kmemleak", r"unreferenced object 0x[0-9a-f]+ \(size (?P<size>\d+)\):",
        ("memory leak in {func}", "memory leak of {size} bytes"), E, end=None, skip=LEAK_SKIP),
    row("kmemleak", r"BUG (?P<cache>\S+) \((?:Not tainted|Tainted: [^)]*)\): Objects remaining in \S+ on __kmem_cache_shutdown",
        "memory leak: objects remaining in {cache} on cache destroy", E, end=END_TASK, skip=LEAK_SKIP),
    # -- oopses ----------------------------------------------------------------------------
    row("oops", r"BUG: (?:unable to handle )?kernel NULL pointer dereference(?:, address:| at) (?P<addr>\w+)",
        ("BUG: kernel NULL pointer dereference in {func}", "BUG: kernel NULL pointer dereference"), E),
    row("oops", r"BUG: unable to handle (?:page fault for address|kernel paging request at):? (?P<addr>\w+)",
        ("BUG: unable to handle page fault in {func}", "BUG: unable to handle page fault"), E),
    row("gpf", r"general protection fault\b.*\[#\d+\]",
        ("general protection fault in {func}", "general protection fault"), E),
    row("bug", r"kernel BUG at (?P<src>\S+?)!", ("kernel BUG in {func}", "kernel BUG at {src}"), E),
    row("oops", r"(?P<what>divide error|stack segment|invalid opcode): [0-9a-f]{4} \[#\d+\]",
        ("{what} in {func}", "{what}"), E, nests=False),
    row("oops", r"Oops: (?:[0-9a-f]{4} )?\[#\d+\]", ("Oops in {func}", "Oops"), E, nests=False),
    # -- other BUG: reports -------------------------------------------------------------------
    row("bug", r"BUG: sleeping function called from invalid context at (?P<src>\S+)",
        "BUG: sleeping function called from invalid context in {func}", E, end=END_TASK),
    row("bug", r"BUG: scheduling while atomic: (?P<comm>.+?)/\d+/0x[0-9a-f]+",
        ("BUG: scheduling while atomic in {func}", "BUG: scheduling while atomic"), E, end=END_TASK,
        skip=(r"_*schedule",)),
    row("bug", r"BUG: (?P<what>workqueue lockup|Bad page state|Bad page map|Bad rss-counter state|stack guard page was hit)",
        "BUG: {what}", E, end=END_ANY),
    row("bug", r"BUG: (?P<what>\S[^,:]*?)\s*(?:[,:!].*)?$", ("BUG: {what} in {func}", "BUG: {what}"), E, end=END_ANY),
    # -- WARN_ON -----------------------------------------------------------------------------
    row("warning", r"WARNING: CPU: \d+ PID: \d+ at lib/refcount\.c:\d+ refcount_",
        "WARNING: refcount bug in {func}", W, skip=(r"refcount_",)),
    row("warning",
        r"WARNING: CPU: \d+ PID: \d+ at (?P<src>\S+) " + FUNC + MODULE_SUFFIX,
        "WARNING in {func}", W),
    row("warning", r"WARNING: CPU: \d+ PID: \d+ at (?P<src>\S+)", ("WARNING in {func}", "WARNING at {src}"), W),
    # -- memory pressure and user space -----------------------------------------------------
    row("oom", r"(?P<comm>.+?) invoked oom-killer: ",
        ("out of memory: killed {victim} (oom-killer invoked by {comm})", "out of memory: oom-killer invoked by {comm}"),
        W, end=re.compile(r"(?:Memory cgroup )?[Oo]ut of memory(?: \([\w_]+\))?: Killed process"),
        details=(r"Killed process (?P<pid>\d+) \((?P<victim>[^)]*)\)",)),
    row("oom", r"(?:Memory cgroup )?[Oo]ut of memory(?: \([\w_]+\))?: Killed process (?P<pid>\d+) \((?P<victim>[^)]*)\)",
        "out of memory: killed {victim}", W, single_line=True),
    row("segfault", r"(?P<comm>.+?)\[(?P<pid>\d+)\]: segfault at (?P<addr>[0-9a-f]+) ip ",
        "segfault in {comm}", W, single_line=True),
    row("segfault",
        r"traps: (?P<comm>.+?)\[(?P<pid>\d+)\] (?:trap )?(?P<what>general protection fault|invalid opcode|divide error|int3|stack segment)",
        "{what} in {comm} (user space)", W, single_line=True),
    # -- taint notices (expected for our unsigned out-of-tree module) --------------------------
    row("taint", r"(?P<module>[\w-]+): loading out-of-tree module taints kernel",
        "taint: out-of-tree module {module}", I, single_line=True),
    row("taint", r"(?P<module>[\w-]+): module verification failed: signature and/or required key missing",
        "taint: unsigned module {module}", I, single_line=True),
    row("taint", r"(?P<module>[\w-]+): (?P<why>.+?)(?: - tainting kernel| taints kernel)\.?\s*$",
        "taint: {why} ({module})", I, single_line=True),
)

KINDS: frozenset[str] = frozenset(p.kind for p in PATTERNS)


def match_header(body: str, *, inside_report: bool = False) -> tuple[ReportPattern, re.Match[str]] | None:
    """The first row whose header matches the start of ``body``."""
    for pat in PATTERNS:
        if inside_report and not pat.nests:
            continue
        m = pat.header.match(body)
        if m:
            return pat, m
    return None
