"""The doc-example convention (docs/README.md), read and matched as written there, without a server."""

from __future__ import annotations

from pathlib import Path

from tests.docs.doc_examples import matches, run_file, steps_of

DOC = """# A doc

```sh
# A remark above a command.
echo one
# one

# A remark after a blank line.
printf 'a\\nb\\nc\\n'
# a
# ...
echo id-42
# id-...
```

```bash
echo never runs
```

```sh
X=kept-between-blocks
echo "$X"
# kept-between-blocks
echo trailing code runs too
```
"""


def test_steps_pair_each_command_with_the_comments_right_under_it() -> None:
    steps = steps_of(DOC.replace("```bash\necho never runs\n```\n", ""))
    assert [(s.block, s.expected) for s in steps] == [
        (1, ["one"]),
        (1, ["a", "..."]),
        (1, ["id-..."]),
        (2, ["kept-between-blocks"]),
        (2, None),
    ]
    assert steps[2].code == "echo id-42"
    assert "# A remark after a blank line." in steps[1].code


def test_wildcards() -> None:
    assert matches(['{"id":"...","title":"Hello"}'], '{"id":"7f3a","title":"Hello"}\n')
    assert not matches(['{"id":"...","title":"Hello"}'], '{"id":"7f3a","title":"Bye"}\n')
    assert matches(["first", "...", "last"], "first\nlast\n")
    assert matches(["first", "...", "last"], "first\n2\n3\nlast\n")
    assert matches(["..."], "")
    assert not matches(["only"], "only\nmore\n")
    assert matches(["trailing spaces"], "trailing spaces   \n\n")


def test_a_file_runs_in_one_session_and_reports_the_diff(tmp_path: Path) -> None:
    doc = tmp_path / "example.md"
    doc.write_text(DOC)
    run = run_file(doc, {}, tmp_path)
    assert len(run.outcomes) == 5 and "never runs" not in "".join(o.stdout for o in run.outcomes)
    assert run.failures == []
    doc.write_text(DOC.replace("# kept-between-blocks", "# something else"))
    failed = run_file(doc, {}, tmp_path)
    assert len(failed.failures) == 1
    assert failed.failures[0].startswith("example.md, block 2 (line ")
    assert "-something else" in failed.failures[0] and "+kept-between-blocks" in failed.failures[0]
