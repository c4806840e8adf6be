import hashlib

import pytest

from ponder.data import BUNDLED, CALIB_DEFAULT, EVAL_DEFAULT, bundled_path, load_text
from ponder.errors import DataError

SHA256 = {
    "wikitext2": "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c",
    "wikitext2-valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_texts_are_the_exact_copies(name):
    assert hashlib.sha256(bundled_path(name).read_bytes()).hexdigest() == SHA256[name]


def test_evaluation_and_calibration_defaults_differ():
    assert EVAL_DEFAULT != CALIB_DEFAULT
    assert load_text(EVAL_DEFAULT)[:2000] != load_text(CALIB_DEFAULT)[:2000]


def test_text_mode_turns_crlf_into_lf():
    assert "\r" not in load_text("wikitext2")


def test_txt_and_jsonl_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n")
    assert load_text(str(tmp_path / "a.txt")) == "hello world\n"
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_text(str(tmp_path / "b.jsonl")) == "one\n\ntwo"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "  \n", "is empty"),
        ("bad.jsonl", "{not json\n", "not valid JSON"),
        ("nofield.jsonl", '{"body": "x"}\n', "no string field 'text'"),
        ("data.csv", "a,b\n", "suffix '.csv'"),
    ],
)
def test_bad_data_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_text(str(tmp_path / name))


def test_missing_file():
    with pytest.raises(DataError, match="not found"):
        load_text("/no/such/file.txt")
