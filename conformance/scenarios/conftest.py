"""Loads the conformance plugin for ``pytest conformance/scenarios`` (no -p needed)."""

from conformance.plugin import (  # noqa: F401  (pytest finds hooks and fixtures by name)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
    scenario,
    shareable,
    suite,
)
