"""Image names: the AMI charset, at most 128 characters, at least 3."""

from __future__ import annotations

import pytest

from aminator_ng.errors import RequestError
from aminator_ng.pipeline.naming import MAX_IMAGE_NAME, sanitize_image_name


def test_allowed_characters_are_kept() -> None:
    name = "My-app_1.0 (rc) [x86] path/to 'q' @home"
    assert sanitize_image_name(name) == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hello:1.0+deb12", "hello_1.0_deb12"),
        ("a,b;c*d?e", "a_b_c_d_e"),
        ("naïve-€-image", "na_ve-_-image"),
        ("tab\there", "tab_here"),
        ("  padded-name  ", "padded-name"),
    ],
)
def test_bad_characters_are_replaced(name: str, expected: str) -> None:
    assert sanitize_image_name(name) == expected


def test_long_names_are_cut_to_128() -> None:
    name = "x" * 300
    assert sanitize_image_name(name) == "x" * MAX_IMAGE_NAME
    assert MAX_IMAGE_NAME == 128


def test_a_name_of_exactly_128_is_kept() -> None:
    name = "hello-1.0-1-all-" + "y" * (128 - 16)
    assert len(name) == 128
    assert sanitize_image_name(name) == name


@pytest.mark.parametrize("name", ["", "ab", "   a   ", "  "])
def test_too_short_names_are_a_request_error(name: str) -> None:
    with pytest.raises(RequestError) as raised:
        sanitize_image_name(name)
    assert raised.value.exit_code == 2
    assert "too short" in raised.value.message
    assert raised.value.hint is not None and "3 to 128" in raised.value.hint


def test_three_characters_are_enough() -> None:
    assert sanitize_image_name("abc") == "abc"
