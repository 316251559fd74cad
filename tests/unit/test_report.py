from __future__ import annotations

import io
import re

from provision.infra.report import LiveReporter, StreamReporter, for_stream


def test_plain_lines_carry_a_timestamp_the_project_and_elapsed_time() -> None:
    stream = io.StringIO()
    reporter = StreamReporter(stream)
    reporter.banner("[Provisioning] Using Local Docker provider")
    reporter.step("shop", "create: nothing is deployed")
    reporter.warn("careful")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[Provisioning\] Using Local Docker provider", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[shop\]\s+0\.\ds create: nothing is deployed", lines[1])
    assert lines[2].endswith("warning: careful")


def test_a_non_terminal_gets_plain_lines() -> None:
    assert isinstance(for_stream(io.StringIO()), StreamReporter)


def test_the_live_display_shows_each_project_and_its_phase() -> None:
    stream = io.StringIO()
    with LiveReporter(stream) as reporter:
        reporter.banner("[Provisioning] Using Local Docker provider")
        reporter.step("shop", "waiting until it is healthy and answers")
        reporter.step("blog", "create: nothing is deployed")
        reporter.step("shop", "created, running (3.1 s)")
    text = stream.getvalue()
    assert "[Provisioning] Using Local Docker provider" in text
    assert "shop" in text and "created, running (3.1 s)" in text and "blog" in text
