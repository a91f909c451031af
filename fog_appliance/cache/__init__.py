"""The model cache: versions in RAM and in the store, LRU by bytes, hit rate per source."""

from fog_appliance.cache.models import CachedModel, ModelCache
from fog_appliance.cache.stats import SOURCES, CacheStats, Source

__all__ = ["SOURCES", "CacheStats", "CachedModel", "ModelCache", "Source"]
