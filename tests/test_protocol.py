"""The gym-remote wire format: encoding, splitting, channel descriptions, folding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.contest import protocol as p


def test_encode_decode_round_trip() -> None:
    raw = p.encode("update", {"ac": 5, "reset": True})
    assert raw.endswith(b"\f") and raw.count(b"\f") == 1
    assert json.loads(raw[:-1]) == {"type": "update", "content": {"ac": 5, "reset": True}}
    assert p.decode(raw[:-1]) == ("update", {"ac": 5, "reset": True})


@pytest.mark.parametrize(
    "raw", [b"\x00\xffgarbage", b"{not json", b"[1, 2]", b'{"content": 1}', b'{"type": 3}', b""]
)
def test_decode_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode(raw)


def test_splitter_across_chunk_boundaries() -> None:
    messages = [p.encode("update", {"ac": i}) for i in range(50)]
    stream = b"".join(messages)
    for chunk in (1, 2, 3, 7, 64, len(stream)):
        splitter = p.MessageSplitter()
        out: list[bytes] = []
        for start in range(0, len(stream), chunk):
            out.extend(splitter.feed(stream[start : start + chunk]))
        assert [p.decode(m) for m in out] == [("update", {"ac": i}) for i in range(50)]
        assert splitter.pending == 0


def test_splitter_keeps_a_partial_message() -> None:
    splitter = p.MessageSplitter()
    assert splitter.feed(b'{"type": "upd') == []
    assert splitter.pending == len(b'{"type": "upd')
    assert splitter.feed(b'ate", "content": {}}\f{"ty') == [b'{"type": "update", "content": {}}']
    assert splitter.pending == len(b'{"ty')


def test_splitter_caps_an_oversized_message() -> None:
    splitter = p.MessageSplitter(max_bytes=1000)
    splitter.feed(b"a" * 600)
    with pytest.raises(p.ProtocolError, match="larger than 1000"):
        splitter.feed(b"a" * 600)
    with pytest.raises(p.ProtocolError):
        p.MessageSplitter(max_bytes=10).feed(b"x" * 20 + b"\f")


def test_splitter_fed_a_byte_at_a_time_caps_and_splits() -> None:
    """An agent trickling its message: the cap holds at the byte past it, and a message that
    arrives in pieces comes out whole, as bytes."""
    splitter = p.MessageSplitter(max_bytes=1000)
    for _ in range(1000):
        assert splitter.feed(b" ") == []
    with pytest.raises(p.ProtocolError, match="larger than 1000"):
        splitter.feed(b" ")
    assert splitter.pending == 0
    raw = p.encode("update", {"ac": 3})
    out = [m for byte in raw for m in splitter.feed(bytes([byte]))]
    assert out == [raw[:-1]] and type(out[0]) is bytes


def test_reader_gives_whole_messages_one_at_a_time_then_none() -> None:
    chunks = [b'{"type": "a"}\f{"type": "b"}\f{"ty', b'pe": "c"}', b"\f", b""]
    reads: list[bytes] = []

    def read() -> bytes:
        reads.append(chunks[len(reads)])
        return reads[-1]

    reader = p.MessageReader()
    assert [p.decode(reader.next(read) or b"")[0] for _ in range(3)] == ["a", "b", "c"]
    assert len(reads) == 3  # no read while a whole message was pending
    assert reader.next(read) is None  # b"": the peer closed
    with pytest.raises(p.ProtocolError, match="larger than 10"):
        p.MessageReader(max_bytes=10).next(lambda: b"x" * 20)


def test_descriptions_match_the_original_strings() -> None:
    assert p.describe_multibinary(12) == [
        "int_fold",
        "[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],",
        {"n": "12", "type": "MultiBinary"},
    ]
    assert p.describe_box((224, 320, 3), np.uint8) == [
        "np",
        '(224, 320, 3), dtype("|u1")',
        {"type": "Box", "shape": "(224, 320, 3)"},
    ]
    assert p.scalar_channels() == {
        "reward": ["float", None, {}],
        "done": ["bool", None, {}],
        "reset": ["bool", None, {}],
    }


def test_shape_strings_parse_like_the_original_eval() -> None:
    # The original client evaluated SHAPE as constructor arguments with dtype = numpy.dtype.
    for shape_text in ('(224, 320, 3), dtype("|u1")', '(210, 160, 3), dtype("|u1")'):
        expected = eval(shape_text, {}, {"dtype": np.dtype})  # the original's way, on our text
        assert p.parse_np_shape(shape_text) == expected
    assert p.parse_int_fold_shape("[2, 2, 2, 2, 2, 2, 2, 2],") == [2] * 8
    assert p.parse_int_fold_shape(p.int_fold_shape([2] * 12)) == [2] * 12
    with pytest.raises(p.ProtocolError):
        p.parse_np_shape("__import__('os').system('true')")
    with pytest.raises(p.ProtocolError):
        p.parse_int_fold_shape("[2, 'a'],")


def test_fold_is_bit_i_equals_button_i() -> None:
    folder = p.Folder([2] * 12)
    assert folder.size == 4096
    bits = np.zeros(12, dtype=np.int8)
    bits[[0, 7]] = 1  # B and RIGHT
    assert folder.fold(bits) == (1 << 0) | (1 << 7)
    rng = np.random.default_rng(0)
    for _ in range(100):
        b = rng.integers(0, 2, 12)
        assert np.array_equal(folder.unfold(folder.fold(b)), b)
    with pytest.raises(ValueError):
        folder.fold([1, 0])


def test_fast_replies_are_the_json_the_original_sends() -> None:
    for reward, done in ((0.0, False), (12.5, True), (-3.0, False), (1e-7, True)):
        raw = p.step_reply(reward, done)
        assert raw.endswith(b"\f")
        assert json.loads(raw[:-1]) == {
            "type": "update",
            "content": {"ob": True, "reward": reward, "done": done},
        }
    assert json.loads(p.RESET_REPLY[:-1]) == {
        "type": "update",
        "content": {"ob": True, "reset": False, "reward": 0, "done": False},
    }
    assert json.loads(p.step_reply(float("nan"), False)[:-1])["content"]["reward"] != 0


def test_client_side_imports_stay_small() -> None:
    """The client runs in agent images without stable-retro: it must not import it."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, agent.connection, agent.random_agent, evaluation.contest.client\n"
        "heavy = {'stable_retro', 'roms_setup', 'torch', 'evaluation.contest.server',"
        " 'docker'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
