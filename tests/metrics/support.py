"""Scraping a real /metrics, as Prometheus does."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.timing import seconds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=seconds()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text: str = response.read().decode()
        return text


async def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:PORT/metrics: (name, sorted labels) to value."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is absent (a labelled child not yet made)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# Sample names per metric type, after the family's own name (the text format's rule).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


async def exposed_as_written(port: int, path: str) -> set[str]:
    """The sample names of http://127.0.0.1:PORT/PATH as written, which is
    what Prometheus stores: Envoy's counters have no _total, which
    prometheus_client's parser would add."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            found.add(line.split()[2])
        elif line and not line.startswith("#"):
            found.add(line.split("{", 1)[0].split(" ", 1)[0])
    return found


async def exposed(port: int) -> set[str]:
    """The sample names http://127.0.0.1:PORT/metrics declares (HELP and
    TYPE), whether or not a labelled child has a sample yet."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    found: set[str] = set()
    for family in text_string_to_metric_families(text):
        found.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        found.update(sample.name for sample in family.samples)
    return found
