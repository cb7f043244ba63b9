"""Typed config. Every model forbids unknown keys, so a typo is an error, not a no-op.

Layering (``load.py``): profile YAML (configs/default.yaml) <- env overlay
(configs/env/<env>.yaml) <- VEXFS_* environment variables <- CLI flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoopDevice(Strict):
    """Block-backed filesystem: an image file on a loop device, formatted by ``mkfs``."""

    loop: str = Field("64M", pattern=r"^\d+[KMG]$", description="image size, e.g. 64M")
    mkfs: str = Field(..., description="command run on the loop device, e.g. 'mkfs.ext4 -q'")


class ModuleSettings(Strict):
    """The kernel module / filesystem under test. Domains inherit these keys."""

    module_name: str = "vexfs_selftest"
    build_path: str = "tests/fixtures/selftest_fs"  # kbuild dir (M=), relative to the config's project root
    module_path: str = "vexfs_selftest.ko"  # the .ko, relative to build_path
    fs_type: str = "vexfs_selftest"
    device: Literal["none"] | LoopDevice = "none"
    module_params: str = ""
    source_env: str | None = None  # env var naming an out-of-tree checkout (VEXFS_SOURCE)


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


class FleetSettings(Strict):
    libvirt_uri: str = "qemu:///system"
    template: Literal["direct-kernel", "disk"] = "direct-kernel"
    guest_kernel: str = "auto"  # "auto": the version linux-image-amd64 installed
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


class StoreSettings(Strict):
    db_path: Path | None = None  # VEXFS_COCKPIT_DB; default: platform data dir


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
    module: ModuleSettings = Field(default_factory=ModuleSettings)
    domains: dict[str, DomainSettings] = Field(default_factory=dict)

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

    def domain(self, name: str) -> DomainSettings:
        """Effective settings: module defaults <- domain section."""
        base = self.module.model_dump()
        section = self.domains.get(name)
        if section is not None:
            base.update(section.model_dump(exclude_unset=True))
        return DomainSettings.model_validate(base)
    # Retention, applied by `vexfs-cockpit gc` (the history DB itself is kept).
    keep_runs_days: float = Field(30.0, ge=0)  # run artifact dirs (console logs, work dirs)
    keep_build_cache_days: float = Field(14.0, ge=0)  # kbuild cache entries and build dirs
    console_log_max_mb: int = Field(64, ge=1)  # per VM console log before it rotates (2 old kept)
