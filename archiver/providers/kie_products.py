"""kie.ai's product APIs outside Market: one row per product (docs/providers.md, kie).

Each product has its own query path and record shape; a row names the path and the
function that reads `data`. The envelope and the URL refresh are kie.py's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from archiver.errors import ProviderUnavailable
from archiver.model import Phase, TaskStatus
from archiver.providers.base import iso_time, ms_to_iso, text

log = logging.getLogger(__name__)

_POLICY = re.compile(r"flagged|violat|unsafe|sensitive|prominent people|minor|inappropriate|prohibit"
                     r"|policy|policies|nsfw|moderat", re.I)
_BAD_INPUT = re.compile(r"english|image format|format|too large|25 ?mi?b|size|width or height|validation", re.I)
# 422 answers that describe the record's state; every other 422 ("record is null",
# "Temporarily supports records within 14 days") means there is no record to read.
_NOT_YET = ("record status is not success", "record result data is")

Read = Callable[[dict[str, Any], str], TaskStatus]  # (data, entry name) → status


@dataclass(frozen=True)
class Product:
    path: str
    read: Read
    min_poll_interval: float = 0.0  # the docs' per-task query limit, as seconds between polls


def reason(code: str | None, message: str | None) -> str:
    """A product's error code and message → our reason word (docs/providers.md)."""
    if message and _POLICY.search(message):
        return "content_moderation"
    if code == "402":
        return "insufficient_credits"
    if code in ("422", "451") or (message and _BAD_INPUT.search(message)):
        return "invalid_parameters"
    return "provider_failed"


def envelope_state(code: int, message: str | None) -> Phase | None:
    """What a product's non-200 body code says of the task, or None if it says nothing."""
    if code == 422 and any(m in (message or "").lower() for m in _NOT_YET):
        return Phase.RUNNING
    if code in (404, 422):
        return Phase.NOT_FOUND
    return None


def local_time(value: Any) -> str | None:
    """kie's "YYYY-MM-DD HH:MM:SS" (zone not stated) or ISO 8601 → ISO 8601.

    A stamp without a zone stays without one (no Z): kie does not say which zone it is.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ms_to_iso(value)
    return iso_time(value)


def _obj(value: Any) -> dict[str, Any]:
    """An object, or one sent as a JSON string (the docs show both); else empty."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _strings(value: Any, where: str) -> list[str]:
    """A list of URL strings, one string, or a JSON string of a list; junk fails the poll."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise ProviderUnavailable(f"kie: {where} is not valid JSON") from None
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ProviderUnavailable(f"kie: {where} is not a list of URLs")
    urls = []
    for item in value:
        if isinstance(item, dict):  # Midjourney: [{"resultUrl": ...}]
            item = item.get("resultUrl") or item.get("url")
        if item and not isinstance(item, str):
            raise ProviderUnavailable(f"kie: {where} holds a {type(item).__name__}, not a URL")
        if item:
            urls.append(item)
    return urls


def _flag(data: dict[str, Any]) -> int | None:
    value = data.get("successFlag")
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _by_flag(data: dict[str, Any], name: str, *, succeeded: tuple[int, ...], failed: tuple[int, ...],
             urls: Callable[[], tuple[list[str], list[str]]], media: str, times: Callable[[Any], str | None]
             ) -> TaskStatus:
    """The products that say how it went with `successFlag`: Veo, Flux, Midjourney, Luma."""
    flag = _flag(data)
    common = _common(data, times)
    if flag in succeeded:
        found, roles = urls()
        return TaskStatus(Phase.SUCCEEDED, urls=tuple(found), roles=tuple(roles), media=media, **common)
    if flag in failed:
        return _failed(data, f"successFlag {flag}", common)
    if flag != 0:
        log.warning("kie: unknown successFlag %r, polling on provider=%s task_id=%s", data.get("successFlag"),
                    name, data.get("taskId"))
    return TaskStatus(Phase.RUNNING, **common)


def _common(data: dict[str, Any], times: Callable[[Any], str | None]) -> dict[str, Any]:
    param = _obj(data.get("paramJson")) or _obj(data.get("param")) or _obj(data.get("generateParam"))
    return {
        "model": text(param.get("model")) or text(data.get("model")),
        "prompt": text(param.get("prompt")),
        "input": param or None,
        "created_at": times(data.get("createTime")),
        "completed_at": times(data.get("completeTime")),
        "response": data,
    }


def _failed(data: dict[str, Any], fallback: str, common: dict[str, Any]) -> TaskStatus:
    code = text(data.get("errorCode")) or text(data.get("failCode"))
    message = text(data.get("errorMessage")) or text(data.get("failMsg"))
    return TaskStatus(Phase.FAILED, reason=reason(code, message), code=code or fallback, message=message,
                      **common)


def _results(urls: list[str], origins: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    return [*urls, *origins], ["result"] * len(urls) + ["origin"] * len(origins)


def veo(data: dict[str, Any], name: str) -> TaskStatus:
    response = _obj(data.get("response")) or _obj(data.get("info"))

    def urls() -> tuple[list[str], list[str]]:
        # The reference puts an array under response; samples read a JSON string at the top or under info.
        found = (_strings(response.get("resultUrls"), "response.resultUrls")
                 or _strings(data.get("resultUrls"), "resultUrls"))
        # Veo's originUrls are un-cropped outputs (not 16:9 requests), kept after the results.
        return _results(found, _strings(response.get("originUrls"), "response.originUrls"))

    return _by_flag(data, name, succeeded=(1,), failed=(2, 3), urls=urls, media="video", times=local_time)


def four_o(data: dict[str, Any], name: str) -> TaskStatus:
    status = str(data.get("status") or "").upper()
    flag = {"GENERATING": 0, "SUCCESS": 1, "CREATE_TASK_FAILED": 2, "GENERATE_FAILED": 2}.get(status, _flag(data))
    response = _obj(data.get("response")) or _obj(data.get("info"))

    def urls() -> tuple[list[str], list[str]]:
        # The reference says resultUrls, the quickstart result_urls: read both.
        value = response.get("resultUrls") or response.get("result_urls")
        return _results(_strings(value, "response.resultUrls"))

    # The status word wins over successFlag, and is the code when errorCode is empty.
    result = _by_flag(dict(data, successFlag=flag), name, succeeded=(1,), failed=(2,), urls=urls, media="image",
                      times=ms_to_iso)
    code = (text(data.get("errorCode")) or status or result.code) if result.phase == Phase.FAILED else None
    return replace(result, code=code, response=data)


def flux_kontext(data: dict[str, Any], name: str) -> TaskStatus:
    response = _obj(data.get("response"))

    def urls() -> tuple[list[str], list[str]]:
        # originImageUrl is not explained by the docs: only resultImageUrl is an output.
        return _results(_strings(response.get("resultImageUrl"), "response.resultImageUrl"))

    return _by_flag(data, name, succeeded=(1,), failed=(2, 3), urls=urls, media="image", times=local_time)


def midjourney(data: dict[str, Any], name: str) -> TaskStatus:
    info = _obj(data.get("resultInfoJson"))

    def urls() -> tuple[list[str], list[str]]:
        return _results(_strings(info.get("resultUrls"), "resultInfoJson.resultUrls"))

    return _by_flag(data, name, succeeded=(1,), failed=(2, 3), urls=urls, media="image", times=local_time)


def luma(data: dict[str, Any], name: str) -> TaskStatus:
    response = _obj(data.get("response"))

    def urls() -> tuple[list[str], list[str]]:
        # response.originUrls is the video the user sent in, not an output.
        return _results(_strings(response.get("resultUrls"), "response.resultUrls"))

    # Flag 4: the callback failed, the generation succeeded.
    return _by_flag(data, name, succeeded=(1, 4), failed=(2, 3), urls=urls, media="video", times=ms_to_iso)


_SUNO_RUNNING = {"PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS"}
_SUNO_FAILED = {"CREATE_TASK_FAILED": "provider_failed", "GENERATE_AUDIO_FAILED": "provider_failed",
                "SENSITIVE_WORD_ERROR": "content_moderation"}


def suno(data: dict[str, Any], name: str) -> TaskStatus:
    status = str(data.get("status") or "").upper()
    found = _obj(data.get("response")).get("sunoData")
    tracks = [t for t in found if isinstance(t, dict)] if isinstance(found, list) else []
    param = _obj(data.get("param"))
    common: dict[str, Any] = {
        "model": text(tracks[0].get("modelName")) if tracks else None,
        "prompt": text(param.get("prompt")),
        "input": param or None,
        "created_at": local_time(tracks[0].get("createTime")) if tracks else None,
        "completed_at": None,
        "response": data,
    }
    complete = bool(tracks) and all(t.get("audioUrl") for t in tracks)
    # CALLBACK_EXCEPTION: kie could not call the callback; the music may be whole all the same.
    if status == "SUCCESS" or (status == "CALLBACK_EXCEPTION" and complete):
        urls, roles = [], []
        for track in tracks:  # never streamAudioUrl: a live stream, not a file
            for key, role in (("audioUrl", "result"), ("imageUrl", "cover")):
                if isinstance(track.get(key), str) and track[key]:
                    urls.append(track[key])
                    roles.append(role)
        return TaskStatus(Phase.SUCCEEDED, urls=tuple(urls), roles=tuple(roles), media="audio", **common)
    if status in _SUNO_FAILED or status == "CALLBACK_EXCEPTION":
        code, message = text(data.get("errorCode")), text(data.get("errorMessage"))
        why = _SUNO_FAILED.get(status) or reason(code, message)
        return TaskStatus(Phase.FAILED, reason=why, code=status, message=message, **common)
    if status not in _SUNO_RUNNING:
        log.warning("kie: unknown suno status %r, polling on provider=%s task_id=%s", status, name,
                    data.get("taskId"))
    return TaskStatus(Phase.RUNNING, **common)


_RUNWAY_RUNNING = {"wait", "queueing", "queuing", "generating"}


def runway(data: dict[str, Any], name: str) -> TaskStatus:
    state = str(data.get("state") or "").lower()
    video = _obj(data.get("videoInfo"))
    common = _common(data, local_time) | {"created_at": local_time(data.get("generateTime"))}
    if state == "success":
        if str(data.get("expireFlag")) == "1":
            return TaskStatus(Phase.FAILED, reason="url_expired", code="expireFlag 1",
                              message="kie deleted the files after 14 days", **common)
        urls, roles = [], []
        for key, role in (("videoUrl", "result"), ("imageUrl", "thumbnail")):
            if isinstance(video.get(key), str) and video[key]:
                urls.append(video[key])
                roles.append(role)
        return TaskStatus(Phase.SUCCEEDED, urls=tuple(urls), roles=tuple(roles), media="video", **common)
    if state == "fail":
        return _failed(data, "fail", common)
    if state not in _RUNWAY_RUNNING:
        log.warning("kie: unknown runway state %r, polling on provider=%s task_id=%s", state, name,
                    data.get("taskId"))
    return TaskStatus(Phase.RUNNING, **common)


PRODUCTS: dict[str, Product] = {
    "veo": Product("/api/v1/veo/record-info", veo),
    "4o-image": Product("/api/v1/gpt4o-image/record-info", four_o, min_poll_interval=1 / 3),
    "flux-kontext": Product("/api/v1/flux/kontext/record-info", flux_kontext),
    "mj": Product("/api/v1/mj/record-info", midjourney),
    "suno": Product("/api/v1/generate/record-info", suno, min_poll_interval=1 / 3),
    "runway": Product("/api/v1/runway/record-detail", runway),
    "luma": Product("/api/v1/modify/record-info", luma),
}
