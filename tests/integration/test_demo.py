"""`signalmail demo`: collector + simulator + read-back, end to end with small numbers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from signalmail.collector.readback import read_spool
from signalmail.demo import demo, demo_environment
from signalmail.services import ServiceError, running_collector


def test_demo_captures_every_simulated_event(tmp_path):
    spool = tmp_path / "data" / "demo" / "spool"
    args = ["--users", "25", "--days", "3", "--seed", "7", "--spool", str(spool), "--capture-only"]
    result = CliRunner().invoke(demo, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spooled = read_spool(spool, "demo")
    assert spooled.events > 100
    assert spooled.duplicates == 0
    assert f"all {spooled.events} simulated events are in the spool, once each" in result.output
    assert f"{len(spooled.segments)} segments, {spooled.events} events" in result.output
    assert "cart abandonment" in result.output
    assert "track: Product Viewed" in result.output
    assert not list(
        (spool / ".journal" / "demo").glob("*.journal")
    )  # stopped cleanly: all published
    # a second run starts fresh: the spool holds only the new run's events
    again = CliRunner().invoke(demo, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert read_spool(spool, "demo").events == spooled.events


def test_collector_that_dies_at_start_up_is_reported(tmp_path):
    spool = tmp_path / "spool"
    holder = running_collector(spool, "k", source_id="same")
    with holder as collector:  # the same source is locked by the first collector
        with (
            pytest.raises(ServiceError, match="exited") as failed,
            running_collector(spool, "k", source_id="same", startup_timeout=20),
        ):
            raise AssertionError("second collector should not start")
        assert "another process" in str(failed.value)  # the log tail says why
        assert collector.process.poll() is None
    assert collector.process.returncode == 0  # SIGTERM is a clean stop


def test_the_demo_watch_leaves_a_pipelines_variables_in_the_shell_behind():
    """A schema or logs folder set for a real pipeline sent the demo's watch elsewhere."""
    shell = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "SIGNALMAIL_DBT_SCHEMA": "analytics",
        "SIGNALMAIL_MANDRILL_API_KEY": "md-real-account",
        "TAP_RUDDERSTACK_LOGS_FOLDER": "events",
        "TARGET_MAILCHIMP_TRANSACTIONAL_LINK_DOMAINS": '["shop.example.com"]',
        "DBT_PROFILES_DIR": "/elsewhere",
    }
    env = demo_environment(shell, SIGNALMAIL_SPOOL="/demo/spool")
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "SIGNALMAIL_SPOOL": "/demo/spool"}
