"""Provider adapters, one module each, and the explicit registry of them.

A provider module declares everything about its type (see base.Provider); config, the poller
and the HTTP server ask this registry and name no type themselves. Adding a provider is one
module, one line here, its fixtures and its tests (CONTRIBUTING.md, "Adding a provider").
"""

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
