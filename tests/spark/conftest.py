"""Spark tests share one Spark session per process (testkit.spark): skip them without it."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def spark_ready() -> None:
    """Java and the spark extra are installed (`make spark` installs both)."""
    pytest.importorskip("pyspark", reason="the spark extra is not installed: make spark")
    pytest.importorskip("dbt.adapters.spark", reason="the spark extra is not installed")
    if shutil.which("java") is None:
        pytest.skip("no java: make spark installs openjdk-17-jre-headless")
