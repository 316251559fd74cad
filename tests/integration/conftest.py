"""Integration tests run on a real Docker Engine; their fixtures (sandbox, images) live in tests/conftest.py.

A missing engine FAILS these tests (it never skips them): CI must prove the product works.
"""
