"""Where the appliance keeps its files. Tests build the same layout under a temporary root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "fog_config.yaml"
STATUS_NAME = "config-status.json"
"""In ``fog_node.data_dir``: what the last set-up did with the boot config (JSON)."""
VENV = Path("/opt/fog-appliance/venv")


@dataclass(frozen=True, slots=True)
class AppliancePaths:
    """Every path the set-up reads or writes; :meth:`under` re-roots them for tests."""

    root: Path = Path("/")

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @classmethod
    def under(cls, root: Path) -> AppliancePaths:
        return cls(root)

    @property
    def boot_config(self) -> Path:
        """What the user puts on the boot partition (FAT, readable from any computer)."""
        return self._p("/boot/firmware") / CONFIG_NAME

    @property
    def etc(self) -> Path:
        return self._p("/etc/fog-appliance")

    @property
    def active_config(self) -> Path:
        """The validated config the node runs with (root:fog 0640)."""
        return self.etc / CONFIG_NAME

    @property
    def defaults(self) -> Path:
        """The image's defaults, under the user's config (shipped read-only in /usr)."""
        return self._p("/usr/share/fog-appliance/appliance-defaults.yaml")

    @property
    def admin_token(self) -> Path:
        """Bearer token of the local admin API (root:fog 0640): the node and the console."""
        return self.etc / "admin.token"

    @property
    def cloud_env(self) -> Path:
        """Environment of the Flower SuperNode sidecar; present only when a cloud is set."""
        return self.etc / "cloud.env"

    @property
    def tls(self) -> Path:
        return self.etc / "tls"

    @property
    def mosquitto_conf(self) -> Path:
        return self._p("/etc/mosquitto/conf.d/fog-appliance.conf")

    @property
    def hostname(self) -> Path:
        return self._p("/etc/hostname")

    @property
    def hosts(self) -> Path:
        return self._p("/etc/hosts")

    @property
    def machine_id(self) -> Path:
        return self._p("/etc/machine-id")

    @property
    def issue(self) -> Path:
        """Shown by the login prompt on tty1 (agetty reads /etc/issue.d/*.issue)."""
        return self._p("/etc/issue.d/fog-appliance.issue")

    @property
    def data_root(self) -> Path:
        """The one directory the hardened service may write (``ReadWritePaths=``)."""
        return self._p("/var/lib/fog-appliance")

    @property
    def admin_home(self) -> Path:
        return self._p("/home/fog-admin")
