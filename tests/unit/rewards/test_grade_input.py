"""The grader CLI on input it cannot read: one `error:` line naming the file and line, exit 2."""

from __future__ import annotations

import pytest

from nemo_grpo.rewards.grade import main


@pytest.mark.parametrize("content, says", [
    (b'{"response": "1", "gold": "1"}\n{"response": "\xff\xfe"}\n', "2: not UTF-8 text"),
    (b'{"response": "1", "gold": "1"}\n\n{"response": "2", gold: 2}\n', "3: not a JSON row (Expecting property name"),
    (b'{"response": "1", "gold": "1"}\n[1, 2]\n', "2: a row needs 'response' and 'gold'"),
])
def test_an_unreadable_line_is_named(tmp_path, capsys, content, says):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    with pytest.raises(SystemExit) as err:
        main(["--input", str(src), "--output", str(tmp_path / "out.jsonl")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src}:{says}")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_missing_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--input", str(tmp_path / "absent.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and lines == [f"error: {tmp_path / 'absent.jsonl'}: cannot read the input (No such file or directory)"]
