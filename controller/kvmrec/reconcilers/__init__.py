"""Reconcilers: one per kind, each observe -> diff -> act for a single key at a time.

A reconcile is handed only an ``ObjectKey``. It reads the desired state from the store and
the live state from a backend afresh, acts until they agree, records status, and is safe
to run again at any time (level-triggered). Raising means "retry with backoff";
``PermanentError`` means "wait until the input changes".
"""
