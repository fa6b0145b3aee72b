"""This node's id: configured, or derived so that it fits [cluster] node_id."""

from __future__ import annotations

import os

from core.cluster.node import node_id
from settings import checks


def test_a_configured_id_is_kept() -> None:
    assert node_id("core-1") == "core-1"


def test_a_derived_id_names_the_process_and_is_new_each_start() -> None:
    first, second = node_id(), node_id()
    assert f"-{os.getpid()}-" in first
    assert first != second
    assert checks.node_id(first) == first
    assert len(first) <= 64
