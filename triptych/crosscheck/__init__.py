"""Cross-checking: our backends against each other (`parity`) and a user's code against all three
(`check`), with one machinery: crosscheck.cases runs a computation in NumPy, JAX and torch; the
checker (crosscheck.session, .grade, .sandbox, .exercises) puts a user's function beside them.

    from triptych.crosscheck import check, assert_matches
"""


def __getattr__(name):
    # Lazy, so `import crosscheck.cases` (the parity table) does not load the whole catalogue.
    if name in ("check", "assert_matches", "Report"):
        from triptych.crosscheck import api
        return getattr(api, name)
    raise AttributeError(f"module 'crosscheck' has no attribute {name!r}")
