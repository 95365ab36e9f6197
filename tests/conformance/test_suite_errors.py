"""What a check raises decides whether the run has a verdict: the driver's failures are FAIL, the
suite's own breakage (pytest-timeout cutting a check off included) makes the check INCOMPLETE."""

from __future__ import annotations

import pytest

from conformance.observe import WaitTimeout
from conformance.plugin import is_driver_failure


def _info(exc: BaseException) -> pytest.ExceptionInfo[BaseException]:
    try:
        raise exc
    except BaseException:
        return pytest.ExceptionInfo.from_current()


def test_a_check_that_fails_is_the_drivers_failure() -> None:
    assert is_driver_failure(_info(AssertionError("sharer 2 never ran")))
    assert is_driver_failure(_info(pytest.fail.Exception("claim allocated but not prepared")))


def test_pytest_timeout_expiring_is_the_suites_error_not_a_failure() -> None:
    assert not is_driver_failure(_info(pytest.fail.Exception("Timeout (>300.0s) from pytest-timeout.")))


def test_an_unexpected_exception_is_the_suites_error() -> None:
    assert not is_driver_failure(_info(KeyError("metadata")))
    assert not is_driver_failure(_info(OSError("connection refused")))


def test_a_wait_that_ran_out_is_the_drivers_failure() -> None:
    # The suite's waits watch for what the driver should bring about (a pod Running), bounded.
    assert is_driver_failure(_info(WaitTimeout("pod never Running")))
