"""The agent report contract: parsing reports, and the termination message round trip."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.api.models import Artifact, StepMetrics, StepResult
from agentflow.report import (
    MAX_ARTIFACTS,
    MAX_EXTRA_METRICS,
    MAX_PARSE_BYTES,
    MAX_SUMMARY_CHARS,
    SUMMARY_FLOOR_CHARS,
    TERMINATION_MESSAGE_LIMIT,
    decode_termination_message,
    encode_termination_message,
    parse_report,
    render_report,
    report_digest,
    with_metrics,
)

SAMPLE = """\
## Summary
Validated Bangladesh VAT and tax compliance requirements for the new feature.

## Actions Taken
- Reviewed VAT rates
- Checked withholding tax rules

## Files Created/Modified
- Created: services/finance/test-validation.ts
- Modified: services/finance/vat.ts

## Metrics
- Tool calls: 5
- Files read: 12
"""


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Markdown reports
# ---------------------------------------------------------------------------------------------


def test_sample_report() -> None:
    result = parse_report(SAMPLE)
    assert result.summary == (
        "Validated Bangladesh VAT and tax compliance requirements for the new feature."
    )
    assert result.artifacts == [
        Artifact(path="services/finance/test-validation.ts", action="created"),
        Artifact(path="services/finance/vat.ts", action="modified"),
    ]
    assert result.metrics.tool_calls == 5
    assert result.metrics.files_read == 12
    assert result.metrics.lines_generated is None
    assert result.metrics.extra == {"actionsTaken": 2}
    assert result.status is None
    assert result.truncated is False
    assert result.digest == "sha256:" + hashlib.sha256(SAMPLE.encode()).hexdigest()


def test_headings_are_case_insensitive_at_any_level_with_crlf() -> None:
    report = (
        "# SUMMARY\r\nAll good.\r\n\r\n### files created/modified ###\r\n"
        "- created: a.py\r\n- DELETED: old.py\r\n#metrics\r\n## METRICS\r\n- tool CALLS: 3\r\n"
    )
    result = parse_report(report)
    assert result.summary == "All good."
    assert [(a.path, a.action) for a in result.artifacts] == [
        ("a.py", "created"),
        ("old.py", "deleted"),
    ]
    assert result.metrics.tool_calls == 3


def test_all_metric_fields_and_extras() -> None:
    report = """## Metrics
- Tool calls: 1,234
- Files read: 12
- Lines generated: 40
- Errors: 0
- Input tokens: 1 000 000
- Output tokens: 50
- P95 latency ms: 180
- Coverage: 87.5%
- **Pass rate:** 0.95
| Cache hits | 7 |
- Version: 1.2.3
- Released: 2024-05-01
- Owner: finance team
"""
    metrics = parse_report(report).metrics
    assert metrics == StepMetrics(
        tool_calls=1234,
        files_read=12,
        lines_generated=40,
        errors=0,
        input_tokens=1_000_000,
        output_tokens=50,
        extra={"p95LatencyMs": 180, "coverage": 87.5, "passRate": 0.95, "cacheHits": 7},
    )


def test_metric_name_forms_map_to_the_same_field() -> None:
    for name in ("Tool calls", "tool_calls", "toolCalls", "TOOL-CALLS", "Tool uses"):
        assert parse_report(f"## Metrics\n- {name}: 9\n").metrics.tool_calls == 9, name
    assert parse_report("## Metrics\n- Prompt tokens: 4\n").metrics.input_tokens == 4


def test_metric_lines_outside_the_metrics_section_are_not_metrics() -> None:
    result = parse_report("## Summary\n- Tool calls: 5\n\n## Notes\n- Errors: 3\n")
    assert result.metrics == StepMetrics()


def test_negative_counts_are_dropped_but_negative_extras_kept() -> None:
    metrics = parse_report("## Metrics\n- Errors: -1\n- Delta: -2.5\n").metrics
    assert metrics.errors is None
    assert metrics.extra == {"delta": -2.5}


@pytest.mark.parametrize(
    ("report", "status"),
    [
        ("## Status\nsuccess\n", "success"),
        ("## Status\n**Failed** - tests did not pass\n", "failure"),
        ("## Status\n✅ Completed\n", "success"),
        ("## Status: partial\n", "partial"),
        ("Status: FAILURE\n\n## Summary\nx\n", "failure"),
        ("## Summary\nDone.\n\n- **Status**: succeeded\n", "success"),
        ("## Summary\nStatus: the rates were reviewed.\n", None),
        ("## Status\nblocked on review\n\nStatus: success\n", "blocked"),
        ("## Summary\nno status here\n", None),
    ],
)
def test_status(report: str, status: str | None) -> None:
    assert parse_report(report).status == status


def test_file_line_forms() -> None:
    report = """## Files
- Created: `src/a b.ts` — new validation tests
- **Modified:** src/b.ts (rates updated)
- Deleted - src/c.ts
- src/d.ts (created)
- [src/e.ts](https://example.invalid/e)
* `src/f.ts`
1. Updated src/g.ts
- Modified: src/b.ts
- Updated the VAT module to the new rates
- None
Some prose about the files.
- created-at.ts
"""
    assert [(a.path, a.action) for a in parse_report(report).artifacts] == [
        ("src/a b.ts", "created"),
        ("src/b.ts", "modified"),
        ("src/c.ts", "deleted"),
        ("src/d.ts", "created"),
        ("src/e.ts", "modified"),
        ("src/f.ts", "modified"),
        ("src/g.ts", "modified"),
        ("created-at.ts", "modified"),
    ]


def test_headings_inside_code_fences_do_not_start_sections() -> None:
    report = "## Summary\nBefore.\n```\n## Metrics\n- Tool calls: 5\n```\nAfter.\n"
    result = parse_report(report)
    assert result.metrics.tool_calls is None
    assert result.summary == "Before.\n```\n## Metrics\n- Tool calls: 5\n```\nAfter."


def test_summary_keeps_paragraphs_and_falls_back_to_the_opening_text() -> None:
    report = "## Summary\n\nFirst line\nsecond line.   \n\n\n\nSecond paragraph.\n\n## Other\nx"
    assert parse_report(report).summary == "First line\nsecond line.\n\nSecond paragraph."
    assert parse_report("Just did it.\nAll of it.\n\nMore detail.\n").summary == (
        "Just did it.\nAll of it."
    )
    assert parse_report("# Report\n\nTitle paragraph.\n\n## Metrics\n- Errors: 1").summary == (
        "Title paragraph."
    )
    assert parse_report("Status: success\nShipped.\n").summary == "Shipped."
    stated = parse_report("## Summary\nShipped.\n**Status:** success\nStatus: the rest.\n")
    assert (stated.summary, stated.status) == ("Shipped.\nStatus: the rest.", "success")


def test_unicode_and_empty_reports() -> None:
    result = parse_report("## Résumé\nignored\n## Summary\nভ্যাট যাচাই করা হয়েছে ✓\n")
    assert result.summary == "ভ্যাট যাচাই করা হয়েছে ✓"
    assert parse_report("") == StepResult(digest=report_digest(""))
    assert parse_report(b"") == StepResult(digest=report_digest(b""))


def test_binary_input_is_read_as_text() -> None:
    data = b"## Summary\nok\x00\xff\xfe done\n## Metrics\n- Errors: 2\x00\n" + bytes(range(256))
    result = parse_report(data)
    assert result.summary == "ok\ufffd\ufffd done"
    assert result.metrics.errors == 2
    assert result.digest == "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# JSON reports
# ---------------------------------------------------------------------------------------------


def test_json_report_camel_case() -> None:
    report = json.dumps(
        {
            "status": "success",
            "summary": "Checked VAT.",
            "artifacts": [
                {"path": "a.ts", "action": "created"},
                {"path": "b.ts"},
                "c.ts",
                {"path": 3},
                {"action": "created"},
            ],
            "metrics": {"toolCalls": 5, "filesRead": "12", "extra": {"score": 0.9}, "p95": 3},
        }
    )
    result = parse_report(report)
    assert result.status == "success"
    assert result.summary == "Checked VAT."
    assert [(a.path, a.action) for a in result.artifacts] == [
        ("a.ts", "created"),
        ("b.ts", "modified"),
        ("c.ts", "modified"),
    ]
    assert result.metrics == StepMetrics(
        tool_calls=5, files_read=12, extra={"score": 0.9, "p95": 3}
    )


def test_json_report_snake_case_grouped_artifacts_in_a_fence() -> None:
    report = (
        "```json\n"
        + json.dumps(
            {
                "Status": False,
                "Summary": "Broke.",
                "artifacts": {"created": ["x.py"], "modified": ["y.py"], "deleted": ["z.py"]},
                "metrics": {"tool_calls": 2, "input_tokens": 10, "output_tokens": True},
                "actions_taken": ["a", "b", "c"],
            }
        )
        + "\n```\n"
    )
    result = parse_report(report)
    assert result.status == "failure"
    assert [(a.path, a.action) for a in result.artifacts] == [
        ("x.py", "created"),
        ("y.py", "modified"),
        ("z.py", "deleted"),
    ]
    assert result.metrics == StepMetrics(tool_calls=2, input_tokens=10, extra={"actionsTaken": 3})


def test_json_that_is_not_an_object_is_read_as_text() -> None:
    assert parse_report("[1, 2, 3]").summary == "[1, 2, 3]"
    assert parse_report('{"broken": ').summary == '{"broken":'


# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------


def test_summary_is_capped() -> None:
    result = parse_report("## Summary\n" + "word " * 2_000)
    assert len(result.summary) == MAX_SUMMARY_CHARS
    assert result.summary.endswith("…")
    assert result.truncated


def test_artifacts_are_capped() -> None:
    report = "## Files\n" + "".join(f"- Created: f{i}.py\n" for i in range(MAX_ARTIFACTS + 50))
    result = parse_report(report)
    assert len(result.artifacts) == MAX_ARTIFACTS
    assert result.artifacts[-1].path == f"f{MAX_ARTIFACTS - 1}.py"
    assert result.truncated


def test_overlong_paths_are_dropped() -> None:
    result = parse_report(f"## Files\n- Created: {'a' * 2_000}.py\n- Created: ok.py\n")
    assert [a.path for a in result.artifacts] == ["ok.py"]


def test_extra_metrics_are_capped() -> None:
    lines = "".join(f"- metric {i}: {i}\n" for i in range(MAX_EXTRA_METRICS + 5))
    result = parse_report("## Metrics\n" + lines)
    assert len(result.metrics.extra) == MAX_EXTRA_METRICS
    assert result.truncated


def test_only_the_first_mebibyte_is_parsed_but_the_digest_covers_all() -> None:
    head = SAMPLE.encode()
    data = head + b"x" * MAX_PARSE_BYTES + b"\n## Metrics\n- Errors: 7\n"
    result = parse_report(data)
    assert result.metrics.tool_calls == 5
    assert result.metrics.errors is None
    assert result.truncated
    assert result.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parse_report(data.decode()).digest == result.digest


@pytest.mark.timeout(20)
def test_adversarial_lines_are_handled_in_linear_time() -> None:
    spaces = " " * 500_000
    for report in (
        f"# a{spaces}b",
        f"## Files\n- a{spaces}b (x",
        f"## Metrics\n- a{spaces}: 1{spaces}x",
        f"Status:{spaces}!",
        f"## Status\n{spaces}",
        "## Files\n- Created" + " " * 500_000 + "x y",
        "## Metrics\n- n: " + "9" * 500_000,
        "{" * 500_000,
        "[" * 500_000,
        "## Summary\n" + "\n" * 500_000,
        "- " * 300_000,
        "## Files\n" + ("- a" + " " * 4_000 + "b (x\n") * 250,
        "## Files\n" + ("- Created" + " " * 4_000 + "x y\n") * 250,
        "## Metrics\n" + ("- a" + " " * 4_000 + ": 1x\n") * 250,
        "## Status\n" + ("Status:" + " " * 4_000 + "!\n") * 250,
        ("#" + " " * 4_000 + "a" + " " * 4_000 + "b\n") * 120,
    ):
        result = parse_report(report)
        assert isinstance(result, StepResult)


def test_report_digest() -> None:
    assert (
        report_digest("ü")
        == report_digest("ü".encode())
        == ("sha256:" + hashlib.sha256("ü".encode()).hexdigest())
    )


# ---------------------------------------------------------------------------------------------
# render_report and with_metrics
# ---------------------------------------------------------------------------------------------


def test_render_report_reads_back() -> None:
    result = parse_report(SAMPLE).model_copy(update={"status": "success"})
    again = parse_report(render_report(result))
    assert again.model_copy(update={"digest": None}) == result.model_copy(update={"digest": None})


def test_with_metrics_replaces_lines_in_the_metrics_section() -> None:
    report = SAMPLE.replace("- Files read: 12\n", "- Files read: 12\n- Input tokens: 1\n\n")
    report += "## Notes\nnothing\n"
    updated = with_metrics(report, {"inputTokens": 100, "outputTokens": 50})
    assert updated.count("Input tokens") == 1
    assert "- Output tokens: 50\n\n## Notes" in updated
    metrics = parse_report(updated).metrics
    assert (metrics.input_tokens, metrics.output_tokens, metrics.tool_calls) == (100, 50, 5)


def test_with_metrics_adds_a_section_or_json_keys() -> None:
    updated = with_metrics("## Summary\nok\n", {"outputTokens": 7})
    assert updated == "## Summary\nok\n\n## Metrics\n- Output tokens: 7\n"
    json_report = '{"summary": "ok", "metrics": {"output_tokens": 1, "toolCalls": 2}}'
    result = parse_report(with_metrics(json_report, {"outputTokens": 7, "unknown": 1}))
    assert (result.summary, result.metrics.output_tokens, result.metrics.tool_calls) == (
        "ok",
        7,
        2,
    )
    assert with_metrics("## Summary\nok\n", {}) == "## Summary\nok\n"


# ---------------------------------------------------------------------------------------------
# The termination message
# ---------------------------------------------------------------------------------------------


def test_round_trip_of_the_sample() -> None:
    result = parse_report(SAMPLE)
    message = encode_termination_message(result, full_size=utf8_size(SAMPLE))
    assert json.loads(message)["v"] == 1
    assert json.loads(message)["size"] == utf8_size(SAMPLE)
    assert decode_termination_message(message) == result


def test_a_report_larger_than_the_limit_is_marked_truncated() -> None:
    result = parse_report(SAMPLE)
    message = encode_termination_message(result, full_size=10 * 1024 * 1024)
    decoded = decode_termination_message(message)
    assert decoded.truncated
    assert decoded.model_copy(update={"truncated": False}) == result


def test_summary_shrinks_first_then_artifacts() -> None:
    result = StepResult(
        status="success",
        summary="s" * MAX_SUMMARY_CHARS,
        artifacts=[Artifact(path=f"dir/file-{i:03}.ts") for i in range(MAX_ARTIFACTS)],
        metrics=StepMetrics(tool_calls=1, extra={f"m{i}": i for i in range(10)}),
        digest=report_digest("x"),
    )
    message = encode_termination_message(result, full_size=100)
    assert utf8_size(message) <= TERMINATION_MESSAGE_LIMIT
    decoded = decode_termination_message(message)
    assert decoded.truncated
    assert decoded.summary == "s" * SUMMARY_FLOOR_CHARS + "…"
    assert 0 < len(decoded.artifacts) < MAX_ARTIFACTS
    assert decoded.artifacts == result.artifacts[: len(decoded.artifacts)]
    assert decoded.metrics == result.metrics
    assert (decoded.status, decoded.digest) == (result.status, result.digest)

    # Too small for the summary floor with the extras: artifacts and extras go, and the
    # summary takes what room is left.
    small = encode_termination_message(result, full_size=100, limit=300)
    assert utf8_size(small) <= 300
    decoded = decode_termination_message(small)
    assert (decoded.artifacts, decoded.metrics.extra) == ([], {})
    assert decoded.metrics.tool_calls == 1
    assert decoded.summary.startswith("sss")
    assert decoded.summary.endswith("…")
    assert len(decoded.summary) < SUMMARY_FLOOR_CHARS
    assert (decoded.status, decoded.digest) == (result.status, result.digest)

    # Smaller still: the other metrics go, then the digest, and the status last.
    bare = StepResult(status="success", digest=result.digest)
    without_counts = encode_termination_message(bare, full_size=100)
    tiny = encode_termination_message(result, full_size=100, limit=utf8_size(without_counts))
    assert decode_termination_message(tiny) == bare.model_copy(update={"truncated": True})
    tinier = encode_termination_message(result, full_size=100, limit=utf8_size(tiny) - 1)
    assert json.loads(tinier) == {"v": 1, "status": "success", "truncated": True, "size": 100}


def test_tiny_limits() -> None:
    result = parse_report(SAMPLE)
    assert encode_termination_message(result, full_size=5, limit=10) == ""
    bare = encode_termination_message(result, full_size=5, limit=40)
    assert json.loads(bare) == {"v": 1, "truncated": True, "size": 5}
    assert decode_termination_message("") == StepResult()
    assert decode_termination_message(None) == StepResult()


def test_decode_a_raw_report() -> None:
    assert decode_termination_message(SAMPLE) == parse_report(SAMPLE)
    tail = "\n".join(f"log line {i}" for i in range(70)) + "\n" + SAMPLE
    decoded = decode_termination_message(tail)
    assert decoded.truncated
    assert decoded.digest is None
    assert decoded.metrics.tool_calls == 5
    assert decode_termination_message('["not", "a", "message"]').summary == (
        '["not", "a", "message"]'
    )


@pytest.mark.parametrize(
    "message",
    [
        {"v": 1, "truncated": False, "size": -1},
        {"v": 1, "truncated": False, "size": "10"},
        {"v": 1, "truncated": False, "size": True},
        {"v": 1, "truncated": False, "size": 10 * 1024 * 1024},
        {"v": 1, "truncated": "no", "size": 10},
        {"v": 1, "truncated": False},
        {"v": 2, "truncated": False, "size": 10},
        {"v": 1, "truncated": False, "size": 10, "summary": 5},
        {"v": 1, "truncated": False, "size": 10, "artifacts": "a.ts"},
        {"v": 1, "truncated": False, "size": 10, "artifacts": [{"path": "a", "action": "x"}]},
        {"v": 1, "truncated": False, "size": 10, "artifacts": [{"path": "", "action": "x"}]},
        {"v": 1, "truncated": False, "size": 10, "metrics": {"toolCalls": "5"}},
        {"v": 1, "truncated": False, "size": 10, "metrics": {"toolCalls": -5}},
        {"v": 1, "truncated": False, "size": 10, "metrics": {"bogus": 5}},
        {"v": 1, "truncated": False, "size": 10, "metrics": {"extra": {"k": "1"}}},
        {"v": 1, "truncated": False, "size": 10, "metrics": []},
        {"v": 1, "truncated": False, "size": 10, "digest": "md5:abc"},
        {"v": 1, "truncated": False, "size": 10, "status": ["success"]},
    ],
)
def test_decode_distrusts_invalid_messages(message: dict[str, object]) -> None:
    decoded = decode_termination_message(json.dumps(message))
    assert decoded.truncated
    assert decoded.artifacts == []
    assert decoded.metrics == StepMetrics()
    assert decoded.digest is None
    assert decoded.status is None


def test_decode_keeps_the_valid_parts_of_a_partly_invalid_message() -> None:
    message = {
        "v": 1,
        "truncated": False,
        "size": 10,
        "status": "success",
        "summary": "ok",
        "artifacts": [{"path": "a.ts", "action": "created"}, {"path": 1, "action": "created"}],
        "metrics": {"toolCalls": 3, "errors": 1.5, "extra": {"score": 1.5, "bad": None}},
    }
    decoded = decode_termination_message(json.dumps(message))
    assert decoded == StepResult(
        status="success",
        summary="ok",
        artifacts=[Artifact(path="a.ts", action="created")],
        metrics=StepMetrics(tool_calls=3, extra={"score": 1.5}),
        truncated=True,
    )


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

# Text without the characters the parser normalises away, so a round trip can be exact.
paths = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=120,
)
results = st.builds(
    StepResult,
    status=st.none() | st.sampled_from(["success", "failure", "partial"]),
    summary=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=MAX_SUMMARY_CHARS
    ),
    artifacts=st.lists(
        st.builds(Artifact, path=paths, action=st.sampled_from(["created", "modified", "deleted"])),
        max_size=MAX_ARTIFACTS,
        unique_by=lambda a: (a.path, a.action),
    ),
    metrics=st.builds(
        StepMetrics,
        tool_calls=st.none() | st.integers(0, 2**63 - 1),
        files_read=st.none() | st.integers(0, 10**6),
        errors=st.none() | st.integers(0, 10),
        input_tokens=st.none() | st.integers(0, 10**9),
        extra=st.dictionaries(
            st.from_regex(r"[a-z][a-zA-Z0-9]{0,20}", fullmatch=True),
            st.floats(allow_nan=False, allow_infinity=False),
            max_size=MAX_EXTRA_METRICS,
        ),
    ),
    digest=st.none() | st.just(report_digest("r")),
    truncated=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2_000) | st.binary(max_size=2_000))
def test_parse_never_raises(text: str | bytes) -> None:
    result = parse_report(text)
    assert len(result.summary) <= MAX_SUMMARY_CHARS
    assert result.digest == report_digest(text)
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    assert isinstance(decode_termination_message(message), StepResult)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "## Summary",
                "### files created/modified",
                "# METRICS",
                "## Status",
                "```",
                "- Created: a.ts",
                "- Tool calls: 1,234",
                "| Errors | 2 |",
                "Status: failed",
                "- ",
                "#",
                "{",
                "}",
                '"metrics": {"toolCalls": 3}',
                "\r",
                "\x00",
                "ü",
            ]
        )
        | st.text(max_size=40),
        max_size=40,
    )
)
def test_parse_never_raises_on_report_like_text(lines: list[str]) -> None:
    result = parse_report("\n".join(lines))
    assert len(result.artifacts) <= MAX_ARTIFACTS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results, st.integers(0, 10**9), st.integers(0, 8_192))
def test_encode_fits_and_decode_preserves_what_fit(
    result: StepResult, full_size: int, limit: int
) -> None:
    message = encode_termination_message(result, full_size=full_size, limit=limit)
    assert utf8_size(message) <= limit
    decoded = decode_termination_message(message)
    if not message:
        assert decoded == StepResult()
        return
    payload = json.loads(message)
    assert payload["size"] == full_size
    if full_size > limit or result.truncated:
        assert decoded.truncated
    if decoded.status is not None:
        assert decoded.status == result.status
    summary = decoded.summary
    if summary != result.summary:
        assert decoded.truncated
        assert summary == "" or (summary.endswith("…") and result.summary.startswith(summary[:-1]))
    assert decoded.artifacts == result.artifacts[: len(decoded.artifacts)]
    extra = decoded.metrics.extra
    assert extra == {k: v for k, v in result.metrics.extra.items() if k in extra}
    for field in ("tool_calls", "files_read", "errors", "input_tokens"):
        value = getattr(decoded.metrics, field)
        assert value is None or value == getattr(result.metrics, field)
    assert decoded.digest in (None, result.digest)
    if not decoded.truncated:
        assert decoded == result.model_copy(update={"output_ref": None})


@settings(max_examples=100, deadline=None)
@given(results)
def test_everything_fits_in_a_large_enough_message(result: StepResult) -> None:
    message = encode_termination_message(result, full_size=100, limit=10**6)
    assert decode_termination_message(message) == result


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=500)
    | st.dictionaries(
        st.sampled_from(
            ["v", "status", "summary", "artifacts", "metrics", "digest", "truncated", "size"]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=10), inner, max_size=3)
            ),
            max_leaves=10,
        ),
    ).map(lambda d: json.dumps({"v": 1, **d}))
)
def test_decode_never_raises(message: str) -> None:
    decoded = decode_termination_message(message)
    assert isinstance(decoded, StepResult)
    # Whatever was decoded can be carried again.
    again = encode_termination_message(decoded, full_size=0)
    assert utf8_size(again) <= TERMINATION_MESSAGE_LIMIT


# Results that Markdown can state exactly: plain paths, one-line summaries, camelCase keys
# that are not StepMetrics fields.
renderable_results = st.builds(
    StepResult,
    status=st.none() | st.sampled_from(["success", "failure", "partial"]),
    summary=st.from_regex(r"[A-Za-z0-9 ,.]{0,300}", fullmatch=True).map(str.strip),
    artifacts=st.lists(
        st.builds(
            Artifact,
            path=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,60}", fullmatch=True),
            action=st.sampled_from(["created", "modified", "deleted"]),
        ),
        max_size=20,
        unique_by=lambda a: (a.path, a.action),
    ),
    metrics=st.builds(
        StepMetrics,
        tool_calls=st.none() | st.integers(0, 2**63 - 1),
        lines_generated=st.none() | st.integers(0, 10**6),
        output_tokens=st.none() | st.integers(0, 10**9),
        extra=st.dictionaries(
            st.from_regex(r"x[a-z0-9]{0,15}(?:[A-Z][a-z0-9]{1,8}){0,3}", fullmatch=True),
            st.floats(allow_nan=False, allow_infinity=False),
            max_size=MAX_EXTRA_METRICS,
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(renderable_results)
def test_render_then_parse_keeps_the_result(result: StepResult) -> None:
    parsed = parse_report(render_report(result))
    assert parsed.model_copy(update={"digest": None}) == result
