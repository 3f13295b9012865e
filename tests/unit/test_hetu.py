"""Finnish personal identity codes: the format of 661/2009 and decree 128/2010 as amended by 1039/2022 (the
century signs in use since 1.1.2023), the check character, and errors that never echo the code (invariant 6).

The valid codes are fictional test codes (individual numbers 900–999); the expected check characters were
worked out by hand from the rule (DDMMYYZZZ mod 31 → 0123456789ABCDEFHJKLMNPRSTUVWXY), not by the code tested.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.errors import InvalidHetuError
from broker.domain.hetu import birth_date, is_test_code, make_hetu, normalise_hetu

VALID = [
    ("131052+308T", date(1852, 10, 13)),
    ("131052-308T", date(1952, 10, 13)),
    ("010594Y9021", date(1994, 5, 1)),
    ("020594X903P", date(1994, 5, 2)),
    ("030594W903B", date(1994, 5, 3)),
    ("040594V9030", date(1994, 5, 4)),
    ("050594U903M", date(1994, 5, 5)),
    ("290200A900B", date(2000, 2, 29)),
    ("010516B903X", date(2016, 5, 1)),
    ("020516C903K", date(2016, 5, 2)),
    ("030516D9037", date(2016, 5, 3)),
    ("040516E903V", date(2016, 5, 4)),
    ("050516F903H", date(2016, 5, 5)),
]


def refusal(value: object) -> InvalidHetuError:
    with pytest.raises(InvalidHetuError) as caught:
        normalise_hetu(value)
    error = caught.value
    assert error.code == "invalid_hetu" and error.field == "hetu" and error.status == 400
    if isinstance(value, str) and value.strip():
        for text in (str(error), error.detail, repr(error.args)):
            assert value.strip() not in text and value.strip().upper() not in text
    return error


@pytest.mark.parametrize(("hetu", "born"), VALID, ids=[h for h, _ in VALID])
def test_a_valid_code_of_each_century_sign_is_accepted_with_its_birth_date(hetu: str, born: date) -> None:
    assert normalise_hetu(hetu) == hetu
    assert birth_date(hetu) == born


@pytest.mark.parametrize("sign", "YXWVU")
def test_the_2023_signs_for_the_1900s_mean_the_same_as_the_hyphen(sign: str) -> None:
    hetu = "010594-9021"
    assert birth_date(hetu.replace("-", sign)) == birth_date(hetu) == date(1994, 5, 1)


@pytest.mark.parametrize("sign", "BCDEF")
def test_the_2023_signs_for_the_2000s_mean_the_same_as_a(sign: str) -> None:
    hetu = "010516A903X"
    assert birth_date(hetu.replace("A", sign)) == birth_date(hetu) == date(2016, 5, 1)


def test_lower_case_and_surrounding_space_are_normalised() -> None:
    assert normalise_hetu(" 020594x903p\n") == "020594X903P"


@pytest.mark.parametrize("hetu", [h for h, _ in VALID])
def test_every_other_check_character_is_refused(hetu: str) -> None:
    for check in "0123456789ABCDEFHJKLMNPRSTUVWXY":
        if check != hetu[-1]:
            assert "check character" in refusal(hetu[:-1] + check).detail


@pytest.mark.parametrize(
    "hetu",
    ["310290-9007", "290200-900B", "000594-9021", "320594-9021", "011394-9021", "010094-9021", "290201A900B"],
    ids=["31 February", "29 February 1900", "day 0", "day 32", "month 13", "month 0", "29 February 2001"],
)
def test_a_code_without_a_real_date_is_refused(hetu: str) -> None:
    assert "valid date" in refusal(hetu).detail


@pytest.mark.parametrize("sign", ["G", "Z", "/", "*", " ", "\u2010"])
def test_an_unknown_century_sign_is_refused(sign: str) -> None:
    hetu = f"010594{sign}9021"
    assert "century sign" in refusal(hetu).detail


@pytest.mark.parametrize("hetu", ["", "010594Y902", "010594Y90211", "010594-9021-", "0105941994-9021"])
def test_a_code_of_the_wrong_length_is_refused(hetu: str) -> None:
    assert "11 characters" in refusal(hetu).detail


@pytest.mark.parametrize("hetu", ["01059AY9021", "010594Y90A1", "010594YABC1", "010594Y902Z", "010594Y902-"])
def test_a_code_of_the_wrong_shape_is_refused(hetu: str) -> None:
    assert "DDMMYYCZZZQ" in refusal(hetu).detail


@pytest.mark.parametrize("individual", ["000", "001"])
def test_individual_numbers_below_002_are_refused(individual: str) -> None:
    assert "individual number" in refusal(f"010594Y{individual}1").detail


def test_digits_of_other_scripts_are_refused() -> None:
    # Full-width digits: int() reads them, so without an ASCII-only pattern they would pass as a second
    # spelling of 170590-902A and give the same person a second look-up index.
    full_width = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in "170590-902A")
    assert normalise_hetu("170590-902A") == "170590-902A"
    refusal(full_width)
    arabic_indic = "".join(chr(ord(c) - ord("0") + 0x660) if c.isdigit() else c for c in "170590-902A")
    refusal(arabic_indic)


@pytest.mark.parametrize("value", [None, 1705909020, b"170590-902A", ["170590-902A"], {"hetu": "170590-902A"}])
def test_a_value_that_is_not_a_string_is_refused(value: object) -> None:
    assert "string" in refusal(value).detail


def test_birth_date_and_is_test_code_refuse_an_invalid_code_the_same_way() -> None:
    for func in (birth_date, is_test_code):
        with pytest.raises(InvalidHetuError) as caught:
            func("310290-9007")
        assert "310290" not in str(caught.value)


@pytest.mark.parametrize(
    ("hetu", "expected"),
    [
        (make_hetu(date(1990, 5, 17), 900), True),
        (make_hetu(date(1990, 5, 17), 999), True),
        (make_hetu(date(1990, 5, 17), 899), False),
        ("131052-308T", False),
    ],
)
def test_individual_numbers_900_to_999_are_test_codes(hetu: str, expected: bool) -> None:
    assert is_test_code(hetu) is expected


@given(
    born=st.dates(min_value=date(1800, 1, 1), max_value=date(2099, 12, 31)),
    individual=st.integers(min_value=2, max_value=999),
)
def test_make_hetu_round_trips_through_validation(born: date, individual: int) -> None:
    hetu = make_hetu(born, individual)
    assert len(hetu) == 11
    assert normalise_hetu(hetu) == hetu
    assert birth_date(hetu) == born
    assert int(hetu[7:10]) == individual
    assert is_test_code(hetu) is (individual >= 900)


def test_make_hetu_uses_the_original_century_signs() -> None:
    assert make_hetu(date(1852, 10, 13), 308) == "131052+308T"
    assert make_hetu(date(1952, 10, 13), 308) == "131052-308T"
    assert make_hetu(date(2000, 2, 29), 900) == "290200A900B"
