"""The x-llmroute-cost-usd header's number: the float's exact shortest value, never an exponent."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.server.dispatch import format_usd


def test_a_small_cost_is_written_without_an_exponent() -> None:
    assert format_usd(1.5e-05) == "0.000015"
    assert format_usd(2.7e-07) == "0.00000027"
    assert format_usd(0.000123) == "0.000123"
    assert format_usd(12.5) == "12.5"


def test_large_and_negative_amounts_keep_every_digit() -> None:
    assert format_usd(1.234e20) == "123400000000000000000"
    assert format_usd(-3.25e-06) == "-0.00000325"
    assert format_usd(1e16) == "10000000000000000"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_reads_as_decimal_of_its_shortest_repr(amount: float) -> None:
    assert format_usd(amount) == format(Decimal(repr(amount)), "f")
