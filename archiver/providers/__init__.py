"""Provider adapters, one module each, and the explicit registry of them."""

from __future__ import annotations

from archiver.providers.acedata import AceData
from archiver.providers.apipod import ApiPod
from archiver.providers.base import Provider
from archiver.providers.kie import Kie
from archiver.providers.maxapi import MaxApi

PROVIDERS: dict[str, type[Provider]] = {
    "acedata": AceData,
    "apipod": ApiPod,
    "kie": Kie,
    "maxapi": MaxApi,
}
