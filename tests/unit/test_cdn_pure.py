"""Pure parts of the CDN service: path encoding, wildcard planning, caller references,
flush timing, backoff and cost. No Django, no network (runs with ``-p no:django``)."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cdn.batching import (
    backoff_delay,
    caller_reference,
    estimate_cost,
    plan_batch,
    should_flush,
)
from pipeline.cdn.paths import cloudfront_path, covers, folder_of, is_wildcard, path_digest

# --- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("media/demo-photo/42/sunset/w640.webp", "/media/demo-photo/42/sunset/w640.webp"),
        ("media/a b.jpg", "/media/a%20b.jpg"),
        ("media/café/crème brûlée.jpg", "/media/caf%C3%A9/cr%C3%A8me%20br%C3%BBl%C3%A9e.jpg"),
        ("media/日本/写真.png", "/media/%E6%97%A5%E6%9C%AC/%E5%86%99%E7%9C%9F.png"),
        ("media/emoji-😀.png", "/media/emoji-%F0%9F%98%80.png"),
        # RFC 1738 unsafe characters are encoded, "~" included (unlike urllib's quote).
        (
            'media/a~b#c%d{e}|^[x]`"<>\\.jpg',
            "/media/a%7Eb%23c%25d%7Be%7D%7C%5E%5Bx%5D%60%22%3C%3E%5C.jpg",
        ),
        # "?" would start a query string and "*" would be a wildcard.
        ("media/what?.jpg", "/media/what%3F.jpg"),
        ("media/star*.jpg", "/media/star%2A.jpg"),
        # Safe and path-legal reserved characters are left alone, as CloudFront asks.
        ("media/a+b,c(1)!'$;:@=&.jpg", "/media/a+b,c(1)!'$;:@=&.jpg"),
        ("media/already%20encoded.jpg", "/media/already%2520encoded.jpg"),
        ("media/tab\there\n.jpg", "/media/tab%09here%0A.jpg"),
    ],
)
def test_cloudfront_path_encodes_like_cloudfront_expects(key: str, path: str) -> None:
    assert cloudfront_path(key) == path


@pytest.mark.parametrize("key", ["", "/media/a.jpg"])
def test_cloudfront_path_rejects_non_keys(key: str) -> None:
    with pytest.raises(ValueError):
        cloudfront_path(key)


keys = st.text(min_size=1, max_size=60).filter(lambda k: not k.startswith("/"))


@given(keys)
def test_encoding_is_ascii_reversible_and_never_a_wildcard(key: str) -> None:
    path = cloudfront_path(key)
    assert path.isascii()
    assert path.startswith("/")
    assert "*" not in path and "?" not in path and " " not in path and "~" not in path
    assert unquote(path, errors="strict") == "/" + key


@given(keys, keys)
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert cloudfront_path(a) != cloudfront_path(b)


def test_helpers() -> None:
    assert folder_of("/media/a/b.jpg") == "/media/a/"
    assert folder_of("/top.jpg") == "/"
    assert is_wildcard("/media/a/*") and not is_wildcard("/media/a/b.jpg")
    assert covers("/media/a/*", "/media/a/b/c.jpg")
    assert not covers("/media/a/*", "/media/ab.jpg")
    assert len(path_digest("/x")) == 64


# --- planning -------------------------------------------------------------------------


def asset(folder: str, n: int) -> list[str]:
    return [f"/media/{folder}/w{i}.webp" for i in range(n)]


def test_without_a_threshold_nothing_is_collapsed() -> None:
    paths = asset("a", 10)
    plan = plan_batch(paths, wildcard_threshold=0, max_wildcards=15)
    assert plan.paths == tuple(sorted(paths)) and plan.wildcards == ()
    assert plan.covered == 10 and plan.saved == 0


def test_folder_reaching_the_threshold_becomes_one_wildcard() -> None:
    paths = asset("a", 6) + asset("b", 2) + ["/media/c/only.jpg"]
    plan = plan_batch(paths, wildcard_threshold=3, max_wildcards=15)
    assert plan.wildcards == ("/media/a/*",)
    assert plan.paths == ("/media/a/*", *sorted(asset("b", 2)), "/media/c/only.jpg")
    assert plan.covered == 9 and plan.saved == 5


def test_wildcard_budget_goes_to_the_folders_saving_most() -> None:
    paths = asset("small", 3) + asset("big", 9) + asset("mid", 5)
    plan = plan_batch(paths, wildcard_threshold=2, max_wildcards=2)
    assert plan.wildcards == ("/media/big/*", "/media/mid/*")
    assert set(asset("small", 3)) <= set(plan.paths)
    assert len(plan.paths) == 2 + 3


def test_a_single_path_is_never_a_wildcard_and_root_is_never_collapsed() -> None:
    plan = plan_batch(
        ["/media/a/x.jpg", "/a.jpg", "/b.jpg"], wildcard_threshold=1, max_wildcards=15
    )
    assert plan.wildcards == ()


def test_nested_folders_collapse_into_the_outer_wildcard_once() -> None:
    paths = asset("a", 2) + asset("a/b", 3) + asset("a/b/c", 2)
    plan = plan_batch(paths, wildcard_threshold=2, max_wildcards=15)
    assert plan.wildcards == ("/media/a/*",)
    assert plan.paths == ("/media/a/*",)
    assert plan.covered == 7


def test_duplicates_are_sent_once() -> None:
    plan = plan_batch(["/x/a", "/x/a", "/x/b"], wildcard_threshold=0, max_wildcards=0)
    assert plan.paths == ("/x/a", "/x/b")


def test_wildcards_are_output_not_input() -> None:
    with pytest.raises(ValueError):
        plan_batch(["/media/a/*"], wildcard_threshold=0, max_wildcards=0)


segment = st.text(alphabet=string.ascii_lowercase[:3], min_size=1, max_size=2)
cf_paths = st.lists(
    st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    max_size=60,
)


@given(cf_paths, st.integers(0, 6), st.integers(0, 15))
def test_plan_covers_every_path_within_budget_and_never_costs_more(
    paths: list[str], threshold: int, budget: int
) -> None:
    plan = plan_batch(paths, wildcard_threshold=threshold, max_wildcards=budget)
    assert len(plan.wildcards) <= budget
    assert len(plan.paths) <= len(set(paths))
    assert len(set(plan.paths)) == len(plan.paths)
    for path in paths:
        assert path in plan.paths or any(covers(w, path) for w in plan.wildcards)
    for w in plan.wildcards:
        assert w != "/*"
        assert not any(covers(other, w) for other in plan.wildcards if other != w)


# --- caller reference -------------------------------------------------------------------

T0 = datetime(2025, 11, 21, 12, 0, tzinfo=UTC)


def test_caller_reference_is_stable_for_the_same_batch() -> None:
    a = caller_reference(batch_id=7, created=T0, paths=["/b", "/a"])
    assert a == caller_reference(batch_id=7, created=T0, paths=["/a", "/b"])
    assert a.startswith("pipeline-7-") and len(a) < 128


def test_caller_reference_differs_for_other_content_or_another_batch() -> None:
    a = caller_reference(batch_id=7, created=T0, paths=["/a"])
    assert a != caller_reference(batch_id=7, created=T0, paths=["/a", "/b"])
    # The same paths overwritten again later need a new invalidation.
    assert a != caller_reference(batch_id=8, created=T0, paths=["/a"])
    assert a != caller_reference(batch_id=7, created=T0 + timedelta(seconds=1), paths=["/a"])


# --- flush timing, backoff, cost ----------------------------------------------------------


def flush(**overrides: float) -> bool:
    args = dict(
        pending=10,
        capacity=3000,
        threshold=3000,
        newest_age=1.0,
        oldest_age=5.0,
        quiet_period=20.0,
        max_delay=300.0,
    )
    args.update(overrides)
    return should_flush(**args)  # type: ignore[arg-type]


def test_partial_batches_wait_while_paths_keep_arriving() -> None:
    assert not flush()
    assert flush(pending=3000)
    assert flush(newest_age=20.0)
    assert flush(oldest_age=300.0)
    assert not flush(pending=0, newest_age=999.0)


def test_no_capacity_means_no_batch_and_little_capacity_means_a_full_batch() -> None:
    assert not flush(capacity=0, pending=5000, newest_age=999.0)
    assert flush(capacity=100, pending=100)
    assert not flush(capacity=100, pending=99)


def test_backoff_grows_caps_and_jitters() -> None:
    assert backoff_delay(1, base=10, cap=600, rand=lambda: 0.0) == 5
    assert backoff_delay(1, base=10, cap=600, rand=lambda: 1.0) == 10
    assert backoff_delay(3, base=10, cap=600, rand=lambda: 1.0) == 40
    assert backoff_delay(30, base=10, cap=600, rand=lambda: 1.0) == 600
    assert 300 <= backoff_delay(30, base=10, cap=600) <= 600


def test_cost_counts_only_paths_beyond_the_free_tier() -> None:
    price = Decimal("0.005")
    assert estimate_cost(999, free_paths=1000, price_per_path=price).cost == 0
    estimate = estimate_cost(5000, free_paths=1000, price_per_path=price)
    assert estimate.billable_paths == 4000
    assert estimate.cost == Decimal("20.000")
