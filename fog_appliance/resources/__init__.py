"""Resource manager: psutil sampling and a pure admission, disk and placement policy."""

from fog_appliance.resources.manager import ResourceManager
from fog_appliance.resources.policy import Admission, Limits, Placement, Sample

__all__ = ["Admission", "Limits", "Placement", "ResourceManager", "Sample"]
