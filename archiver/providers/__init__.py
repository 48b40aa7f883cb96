"""Provider adapters, one module each, and the explicit registry of them."""

from __future__ import annotations

from archiver.providers.acedata import AceData
from archiver.providers.apipod import ApiPod
from archiver.providers.base import Provider
from archiver.providers.fal import Fal
from archiver.providers.kie import Kie
from archiver.providers.maxapi import MaxApi
from archiver.providers.replicate import Replicate

PROVIDERS: dict[str, type[Provider]] = {
    "acedata": AceData,
    "apipod": ApiPod,
    "fal": Fal,
    "kie": Kie,
    "maxapi": MaxApi,
    "replicate": Replicate,
}
