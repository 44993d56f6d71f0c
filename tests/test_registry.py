"""The name → factory registry that backbones, methods, losses and backends share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cxrhash.registry import Registry


def test_register_returns_the_object_and_get_finds_it_by_name() -> None:
    reg: Registry[Callable[[], str]] = Registry("widget")

    @reg.register("zeta")
    def zeta() -> str:
        return "z"

    def alpha() -> str:
        return "a"

    assert reg.register("alpha")(alpha) is alpha  # the decorator leaves the object as it was
    assert zeta() == "z"  # still the function, not a wrapper
    assert reg.get("zeta") is zeta and reg.get("alpha") is alpha
    assert reg.names() == ["alpha", "zeta"]  # sorted, not in registration order
    assert "alpha" in reg and "beta" not in reg and 3 not in reg


def test_a_name_is_registered_once() -> None:
    reg: Registry[int] = Registry("number")
    reg.register("one")(1)
    with pytest.raises(ValueError, match="number 'one' is already registered"):
        reg.register("one")(2)
    assert reg.get("one") == 1  # the first entry stays


def test_unknown_names_list_the_known_ones() -> None:
    reg: Registry[int] = Registry("loss")
    with pytest.raises(KeyError, match=r"unknown loss 'dpsh'; known: \(none\)"):
        reg.get("dpsh")
    reg.register("hashnet")(1)
    reg.register("csq")(2)
    with pytest.raises(KeyError, match="unknown loss 'dpsh'; known: csq, hashnet") as err:
        reg.get("dpsh")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_registries_are_independent() -> None:
    first: Registry[int] = Registry("a")
    second: Registry[int] = Registry("b")
    first.register("x")(1)
    assert second.names() == [] and "x" not in second
    second.register("x")(2)  # the same name in another registry is no clash
    assert (first.get("x"), second.get("x")) == (1, 2)
