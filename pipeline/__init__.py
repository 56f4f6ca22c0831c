"""Django media pipeline: optimized originals and modern-format variants in two buckets.

This package's ``__init__`` imports nothing from Django so that the pure modules
(``pipeline.imaging``, ``pipeline.naming``, ``pipeline.errors``) stay importable anywhere.
"""
