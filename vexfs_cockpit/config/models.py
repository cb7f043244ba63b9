"""Typed config. Every model forbids unknown keys, so a typo is an error, not a no-op.

Layering (``load.py``): profile YAML (configs/default.yaml) <- env overlay
(configs/env/<env>.yaml) <- VEXFS_* environment variables <- CLI flags.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, field_validator
from pydantic_core import PydanticCustomError

# Values that reach guest shell commands. Every command quotes them too (engine/module.py);
# these patterns make a hostile value a config error before anything runs.
MODULE_NAME = r"^[A-Za-z0-9_]{0,64}$"  # "" = the filesystem is built into the guest kernel
FS_TYPE = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$"  # no leading "-": it would read as an option
ONE_LINE = r"^[^\x00\n\r]*$"  # paths and commands: no line break, no NUL
_PARAM_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=[^\x00\n\r]*)?")


def split_module_params(text: str) -> tuple[str, ...]:
    """insmod parameters as words (shell quoting as in ``a=1 name='x y'``), each ``KEY``
    or ``KEY=VALUE``. Raises ValueError saying what is wrong (an unbalanced quote, a word
    that is not a parameter)."""
    try:
        words = shlex.split(text)
    except ValueError as err:  # "No closing quotation", "No escaped character"
        raise ValueError(str(err).lower()) from None
    for word in words:
        if not _PARAM_WORD.fullmatch(word):
            raise ValueError(f"{word!r} is not KEY=VALUE")
    return tuple(words)


def _first_bad_text(value: Any, where: str) -> str | None:
    """The key path of the first string under ``value`` holding a line break or NUL."""
    if isinstance(value, str):
        return where if any(c in value for c in "\x00\n\r") else None
    if isinstance(value, dict):
        items = [(f"{where}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    return next((bad for path, item in items if (bad := _first_bad_text(item, path)) is not None), None)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoopDevice(Strict):
    """Block-backed filesystem: an image file on a loop device, formatted by ``mkfs``."""

    loop: str = Field("64M", pattern=r"^\d+[KMG]$", description="image size, e.g. 64M")
    mkfs: str = Field(..., description="command run on the loop device, e.g. 'mkfs.ext4 -q'")

    @field_validator("mkfs")
    @classmethod
    def _mkfs_words(cls, v: str) -> str:
        # Run as words (the device appended), never as shell text.
        try:
            words = shlex.split(v)
        except ValueError as err:
            raise PydanticCustomError("mkfs_words", "a command in shell words ({why})", {"why": str(err).lower()}) from None
        if not words or any(c in v for c in "\x00\n\r"):
            raise PydanticCustomError("mkfs_words", "a command on one line, e.g. 'mkfs.ext4 -q'")
        return v


class ModuleSettings(Strict):
    """The kernel module / filesystem under test. Domains inherit these keys."""

    module_name: str = Field(
        "vexfs_selftest", pattern=MODULE_NAME,
        description="a kernel module name: letters, digits and _; empty when the filesystem is built in",
    )
    # kbuild dir (M=), relative to the config's project root
    build_path: str = Field("tests/fixtures/selftest_fs", pattern=ONE_LINE, description="a path on one line")
    module_path: str = Field("vexfs_selftest.ko", pattern=ONE_LINE, description="a path on one line")  # relative to build_path
    fs_type: str = Field(
        "vexfs_selftest", pattern=FS_TYPE, description="a filesystem type: letters, digits, _ . and -, not first",
    )
    device: Literal["none"] | LoopDevice = "none"
    module_params: str = ""  # insmod parameters: KEY=VALUE words (split_module_params)
    source_env: str | None = None  # env var naming an out-of-tree checkout (VEXFS_SOURCE)

    @field_validator("module_params")
    @classmethod
    def _params_are_words(cls, v: str) -> str:
        try:
            split_module_params(v)
        except ValueError as err:
            raise PydanticCustomError("module_params", "insmod parameters as KEY=VALUE words: {why}", {"why": str(err)}) from None
        return v


class DomainSettings(ModuleSettings):
    """A domain's section. Module keys default to the top-level ``module`` section.

    Domain plugins may extend this with their own keys (``DomainBase.settings_model``).
    """

    enabled: bool = True
    max_load_time: PositiveFloat = 5.0  # seconds
    max_unload_time: PositiveFloat = 5.0
    memory_leak_threshold: PositiveInt = 1024 * 1024  # bytes of slab/MemAvailable drift
    hang_detection_timeout: PositiveFloat = 30.0  # seconds without an answer = hung
    stop_on_critical_failure: bool = True
    options: dict[str, Any] = Field(default_factory=dict)  # domain-specific extras

    @field_validator("options")
    @classmethod
    def _options_on_one_line(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Options reach guest commands (paths, mount options, parameters): quoted there,
        # and no line break or NUL here.
        if (bad := _first_bad_text(v, "options")) is not None:
            raise PydanticCustomError("option_text", "text on one line (no line break or NUL) in {key}", {"key": bad})
        return v


class FleetSettings(Strict):
    libvirt_uri: str = "qemu:///system"
    template: Literal["direct-kernel", "disk"] = "direct-kernel"
    # "auto": what the kernel metapackage installed (linux-image-amd64, Ubuntu: -generic); "host": the running kernel; a version in
    # /boot (it names host paths /boot/vmlinuz-V, /lib/modules/V: one component, never
    # "..") ; or a path with a "/" (or ~): a built kernel tree (images/kernel_tree.py),
    # made absolute here (relative to the working directory).
    guest_kernel: str = Field(
        "auto", description="auto, host, a kernel release such as 6.1.0-57-amd64, or a built kernel tree's path",
    )
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    base_image_path: Path | None = None  # disk template (VEXFS_BASE_IMAGE_PATH)
    storage_pool: str | None = None  # VEXFS_STORAGE_POOL
    ssh_key_path: Path | None = None  # VEXFS_SSH_KEY_PATH; default: the built image's key
    image_dir: Path | None = None  # where `image build` caches the guest; default: data dir
    kernel_cmdline_extra: str = ""
    disk_cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    disk_io: Literal["native", "threads", "io_uring"] = "threads"
    enable_hugepages: bool = False
    boot_timeout_s: PositiveFloat = 120.0
    # systemd + cloud-init under TCG take minutes where the initramfs guest takes seconds
    disk_boot_timeout_s: PositiveFloat = 600.0
    stop_timeout_s: PositiveFloat = 10.0
    # auto: a fresh VM is restored from a saved, booted golden guest (fleet/snapshot.py),
    # cold-booted when that fails; off: always boot (the disk template always boots)
    restore: Literal["auto", "off"] = "auto"

    @field_validator("guest_kernel")
    @classmethod
    def _kernel_release_or_tree(cls, v: str) -> str:
        import os

        if "/" in v or v.startswith("~"):
            return os.path.abspath(os.path.expanduser(v))  # a tree: checked when it is used (built or not)
        if not re.fullmatch(r"(auto|host|[A-Za-z0-9][A-Za-z0-9._+~-]{0,127})", v) or ".." in v:
            raise ValueError(f"{v!r}: auto, host, an installed release (e.g. 6.1.0-57-amd64) or a kernel tree's path (with a /)")
        return v

    @property
    def kernel_tree(self) -> Path | None:
        """The built kernel tree the direct-kernel guest boots (guest_kernel is a path), else None."""
        if self.template == "direct-kernel" and self.guest_kernel.startswith("/"):
            return Path(self.guest_kernel)
        return None

    @field_validator("restore", mode="before")
    @classmethod
    def _restore_off_is_not_false(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` (also `--set fleet.restore=off`) as false.
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    @property
    def template_boot_timeout_s(self) -> float:
        """Seconds from start until the guest must be ready, for the configured template."""
        return self.disk_boot_timeout_s if self.template == "disk" else self.boot_timeout_s


class ResourceSettings(Strict):
    vms_per_domain: int = Field(1, ge=1, le=16)
    memory_mb: PositiveInt = 512
    cpus: PositiveInt = 1
    disk_gb: float = Field(1.0, ge=0)
    max_total_memory_gb: PositiveFloat = 8
    max_total_cpus: PositiveInt = 4
    max_total_disk_gb: PositiveFloat = 20


class ExecutionSettings(Strict):
    test_timeout_minutes: PositiveFloat = 5
    parallel_test_execution: bool = False
    max_parallel_tests: PositiveInt = 1
    retry_count: int = Field(0, ge=0, le=10)
    # Hang deadline from each test's own history (analysis/deadlines.py): p95 of its recent passing
    # durations x deadline_factor, at least deadline_floor_s, at most test_timeout_minutes;
    # tests with fewer than deadline_min_runs such durations get test_timeout_minutes. 0: off.
    deadline_factor: float = Field(4.0, ge=0)
    deadline_floor_s: PositiveFloat = 60.0
    deadline_min_runs: int = Field(5, ge=1)


class StoreSettings(Strict):
    # The history: an SQLite file or a postgresql:// URL without a password (checked,
    # never echoed, by store/location.py when a command opens it). VEXFS_COCKPIT_DB sets it.
    url: str | None = None
    db_path: Path | None = None  # the older spelling of url (an SQLite file); not both
    # Retention, applied by `vexfs-cockpit gc` (the history DB itself is kept).
    keep_runs_days: float = Field(30.0, ge=0)  # run artifact dirs (console logs, work dirs)
    keep_build_cache_days: float = Field(14.0, ge=0)  # kbuild cache entries and build dirs
    console_log_max_mb: int = Field(64, ge=1)  # per VM console log before it rotates (2 old kept)

    @property
    def location(self) -> str | None:
        """store.url or store.db_path as text (store.db.resolve_location parses it)."""
        return self.url or (str(self.db_path) if self.db_path is not None else None)


class AlertRule(Strict):
    """One alert (vexfs_cockpit/monitoring/alerts.py): ``alerts rules`` writes it as a
    Prometheus rule, ``alerts check`` evaluates it against a stored run."""

    name: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    kind: Literal["failure_rate", "test_timeout", "kernel_crash", "metric_regression", "new_regression"]
    severity: Literal["info", "warning", "critical"] = "warning"
    threshold: float = Field(0.0, ge=0)  # failure_rate: bad/(passed+bad) above it; metric_regression: percent
    metric: str = Field("", pattern=r"^[A-Za-z0-9_.:-]*$")  # metric_regression: the stored metric name (higher is worse)
    domain: str = Field("", pattern=r"^[A-Za-z0-9_]*$")  # only this domain ("" every domain)


def split_listen(text: str, *, any_address: bool = False) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', 'localhost:0' -> (host, port); ValueError saying
    what is wrong. Loopback only unless ``any_address``: the metrics name tests, VMs and
    kernel reports, and a cockpit host serves nothing off itself by default."""
    import ipaddress

    host, sep, port_s = (text or "").rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{text!r}: use HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]")
    host = "127.0.0.1" if host == "localhost" else host
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: HOST is an IP address or localhost, e.g. 127.0.0.1:9464") from None
    if not addr.is_loopback and not any_address:
        raise ValueError(f"{text}: not a loopback address (127.0.0.1, ::1, localhost)")
    return host, int(port_s)


class MonitoringSettings(Strict):
    alerts: list[AlertRule] = Field(default_factory=list)
    # Serve /metrics while a run or the TUI is running (app/session.py); "" = off.
    listen_any_address: bool = False  # declared before listen: its check reads it
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, v: str, info: Any) -> str:
        if not v:
            return v
        any_address = bool(info.data.get("listen_any_address"))
        try:
            if split_listen(v, any_address=any_address)[1] == 0:
                raise ValueError("port 0")  # Prometheus scrapes a fixed address: no "any free port"
        except ValueError:
            # describe.py words it: "monitoring.listen: expected <this>, found '<value>'"
            what = "an address and a fixed port" if any_address else "a loopback address and a fixed port"
            raise PydanticCustomError(
                "listen", what + " such as 127.0.0.1:9464" + ("" if any_address else " (or listen_any_address: true)")
            ) from None
        return v

    webhook_url_env: str = Field("VEXFS_COCKPIT_WEBHOOK_URL", pattern=r"^[A-Z_][A-Z0-9_]*$")  # the URL is never in a file
    webhook_timeout_s: PositiveFloat = 5.0
    webhook_retries: int = Field(3, ge=0, le=10)
    webhook_format: Literal["slack", "json"] = "slack"  # json: {"source", "run_id", "alerts": [...]}


class AnalysisSettings(Strict):
    """`vexfs-cockpit analyze` and `expunge audit` (vexfs_cockpit/analysis)."""

    mad_k: PositiveFloat = 4.0  # a value further than k * MAD from its history's median is an anomaly
    min_history: int = Field(5, ge=2)  # earlier runs a test needs before its values are judged
    flaky_min_flips: PositiveInt = 2  # pass<->fail flips over the history that make a test flaky
    audit_runs: PositiveInt = 3  # a known failure passing in this many latest runs should be dropped
    known_failures_dir: Path = Path("configs/known-failures")  # <env>.yaml per environment
    # A test that changed against the baseline (or its last result in the env) is rerun this
    # many times on a fresh VM at the end of the run to confirm it; 0: no reruns (unconfirmed).
    confirm_reruns: int = Field(3, ge=0, le=20)


# A libvirt connection URI the cockpit can place VMs over: the local system daemon,
# another host through SSH (qemu+ssh://user@host[:port]/system), or libvirt's test
# driver (test:///path/node.xml, for tests). One line, no spaces.
LIBVIRT_URI = r"^(qemu|test)(\+(ssh|libssh|libssh2|unix|tcp|tls))?://[^\s]*$"
HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
HOST_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class HostSettings(Strict):
    """One libvirt host the fleet may place VMs on (``hosts:``; fleet/placement.py)."""

    name: str = Field(..., pattern=HOST_NAME, description="a host name: letters, digits, _ . -")
    uri: str = Field(..., pattern=LIBVIRT_URI,
                     description="a libvirt URI such as qemu:///system or qemu+ssh://root@host/system")
    # Capacity granted to the cockpit there; unset: what libvirt reports (getInfo: CPUs,
    # memory less 512 MB for the host itself). disk_gb unset: disk is not checked there.
    cpus: PositiveInt | None = None
    memory_mb: PositiveInt | None = None
    disk_gb: PositiveFloat | None = None
    max_vms: PositiveInt | None = None  # per-host cap on VMs at once
    labels: list[str] = Field(default_factory=list)  # e.g. perf-quiet, kvm: what affinity asks for
    # user@host[:port] the guests' forwarded SSH ports are reached through (their ports
    # only listen on that host's loopback); "" = the URI's user@host for qemu+ssh, none locally.
    ssh_jump: str = Field("", pattern=r"^(([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?)?$",
                          description="user@host[:port], e.g. root@perf1.example.org")
    # The key and known_hosts file for that SSH connection; unset: your own (~/.ssh, agent).
    ssh_key: Path | None = None
    ssh_known_hosts: Path | None = None

    @field_validator("labels")
    @classmethod
    def _label_words(cls, v: list[str]) -> list[str]:
        for label in v:
            if not re.fullmatch(HOST_LABEL, label):
                raise PydanticCustomError("host_label", "labels of letters, digits, _ . - ({label} is not)", {"label": repr(label)})
        return v


class PlacementSettings(Strict):
    """Which hosts a domain's VMs may go to (``placement:``; with ``hosts:``)."""

    # domain -> labels its host must all carry, e.g. {performance_metrics: [perf-quiet]}
    affinity: dict[str, list[str]] = Field(default_factory=dict)


DOMAIN_NAMES = (
    "kernel_module",
    "filesystem_operations",
    "vector_operations",
    "performance_metrics",
    "safety_validation",
    "integration_testing",
)


class CockpitConfig(Strict):
    profile: str = "selftest"
    description: str = ""
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    module: ModuleSettings = Field(default_factory=ModuleSettings)
    domains: dict[str, DomainSettings] = Field(default_factory=dict)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    hosts: list[HostSettings] = Field(default_factory=list)  # empty: this machine (fleet.libvirt_uri)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)

    # Where the YAML came from; relative paths in the config resolve against this.
    source_path: Path | None = Field(None, exclude=True)
    env: str = "dev"

    # Filled by ``load.load_config`` (private: no YAML can set them, never dumped).
    # Dotted key -> the layer that set it ("configs/env/ci.yaml", "$VEXFS_COCKPIT_DB",
    # "command line"), so later checks can name the file to fix.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _layers: list[str] = PrivateAttr(default_factory=list)  # layer labels, lowest precedence first
    # source_env name -> checkout directory, captured from the environment at load time.
    _checkouts: dict[str, Path] = PrivateAttr(default_factory=dict)

    @field_validator("domains", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("hosts")
    @classmethod
    def _host_names_unique(cls, v: list[HostSettings]) -> list[HostSettings]:
        seen: set[str] = set()
        for h in v:
            if h.name in seen:
                raise PydanticCustomError("host_name", "host names used once each ({name} twice)", {"name": repr(h.name)})
            seen.add(h.name)
        return v

    def domain(self, name: str) -> DomainSettings:
        """Effective settings: module defaults <- domain section."""
        base = self.module.model_dump()
        section = self.domains.get(name)
        if section is not None:
            base.update(section.model_dump(exclude_unset=True))
        return DomainSettings.model_validate(base)
