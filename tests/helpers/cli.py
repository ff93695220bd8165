"""What a user sees from a failed command: one ``magvit: error: ...`` line, no traceback."""

from __future__ import annotations


def assert_one_line_error(err: str, *fragments: str) -> str:
    """The error line of ``err`` (a command's stderr); fails on a traceback, several error lines, or a
    line after the error, and checks that every fragment is in it."""
    assert "Traceback" not in err, err
    assert "weights_only=False" not in err, err  # never advise loading a refused file as code
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("magvit: error: "), err
    assert err.rstrip().endswith(errors[0]), err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def one_line_error(capsys, *fragments: str) -> str:
    """:func:`assert_one_line_error` on what an in-process ``magvit.cli.main`` call wrote to stderr."""
    return assert_one_line_error(capsys.readouterr().err, *fragments)
