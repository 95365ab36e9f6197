"""Deliberately broken variants of the reference driver, one behaviour each.

Each module imports the reference driver, overrides exactly one behaviour and calls its main, so
the product driver carries no "be broken" flag. ``python -m tests.support.mutants.<name> <driver args>``;
tests/conformance/test_suite_bites.py runs the suite on sim against each and requires the named capability to
fail.
"""
