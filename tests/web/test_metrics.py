"""GET /metrics after a real run: every §12 name is there and the counts match what happened."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.web import API_KEY, kie_entry, web_daemon

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana-archiver.json"
NAMES = {
    "archiver_tasks", "archiver_tasks_finished", "archiver_polls", "archiver_poll_duration_seconds",
    "archiver_downloads", "archiver_download_bytes", "archiver_download_duration_seconds",
    "archiver_success_to_archived_seconds", "archiver_storage_writes", "archiver_inbox_lines",
    "archiver_oldest_pending_seconds", "archiver_build_info",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_what_happened(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    files = {"m-one": [media_bytes("png", 70_000, "1")],
             "m-two": [media_bytes("jpg", 5_000, "2"), media_bytes("png", 12_345, "3")]}
    for task_id, content in files.items():
        fake.add(FakeTask("kie", task_id, ["queued", "running", "success"], content))
    fake.add(FakeTask("kie", "m-bad", ["running", "fail"], fail_code="422",
                      fail_msg="Invalid prompt: prompt contains prohibited content"))
    fake.add(FakeTask("kie", "m-wait", ["running"]))
    providers = lambda base: {"kie": kie_entry(base, poll_intervals=["0.2s"]),  # noqa: E731
                              "idle": kie_entry(base)}
    async with web_daemon(tmp_path, fake, providers) as web:
        # The inbox takes the run's seven lines: five new tasks, one known again, one bad.
        (tmp_path / "inbox.txt").write_text(
            "kie m-one\nkie m-two\nkie m-bad\nkie m-gone\nkie m-one\nnope x\nidle m-wait\n")
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 2 and s["counts"]["failed"] == 2
                                  and s["counts"]["polling"] == 1)
        status, text = await web.get("/metrics")
        requests = len(fake.requests_for("kie"))
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families >= NAMES, NAMES - families
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert [value("archiver_tasks", state=s) for s in ("queued", "polling", "downloading", "archived", "failed")] \
        == [0, 1, 0, 2, 2]
    assert value("archiver_tasks_finished_total", provider="kie", outcome="archived") == 2
    assert value("archiver_tasks_finished_total", provider="kie", outcome="content_moderation") == 1
    assert value("archiver_tasks_finished_total", provider="kie", outcome="not_found") == 1
    polls = {labels: v for (name, labels), v in got.items() if name == "archiver_polls_total"}
    assert sum(polls.values()) == requests  # m-wait's entry polls once, then not for 30s: nothing in flight
    assert value("archiver_polls_total", provider="idle", result="running") == 1
    assert value("archiver_polls_total", provider="kie", result="succeeded") == 2
    assert value("archiver_polls_total", provider="kie", result="failed") == 1
    assert value("archiver_polls_total", provider="kie", result="not_found") == 1
    timed = value("archiver_poll_duration_seconds_count", provider="kie") + \
        value("archiver_poll_duration_seconds_count", provider="idle")
    assert timed == requests
    assert value("archiver_downloads_total", result="ok") == 3
    assert value("archiver_download_bytes_total") == sum(len(b) for content in files.values() for b in content)
    assert value("archiver_download_duration_seconds_count") == 3
    assert value("archiver_success_to_archived_seconds_count") == 2
    assert value("archiver_storage_writes_total", result="ok") == 3 * 2 + 2  # assets, sidecars, _failed records
    assert value("archiver_inbox_lines_total", result="queued") == 5
    assert value("archiver_inbox_lines_total", result="known") == 1
    assert value("archiver_inbox_lines_total", result="rejected") == 1
    assert value("archiver_oldest_pending_seconds", provider="idle") > 0  # m-wait is still polling
    assert value("archiver_oldest_pending_seconds", provider="kie") == 0
    assert value("archiver_build_info", version="0.1.0") == 1
    assert "m-one" not in text and "task_id" not in text, "a task ID is never a label"
    check_dashboard({name for name, _ in got})


def check_dashboard(scraped: set[str]) -> None:
    """Every series the Grafana dashboard queries is one /metrics really serves."""
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"archiver_[a-z_]+", expr)}
    assert used and used <= scraped, used - scraped
