"""Salvaging a truncated or damaged mcap (`bags.salvage`, the `mcap` library's stream reader):
every complete message before the cut, nothing after it, and a damaged chunk skipped without
hiding the chunks after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinygpt_ros.bags.reader import iter_bag
from tinygpt_ros.bags.salvage import McapSalvage, mcap_files

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "sample_bag"
MCAP = SAMPLE / "sample_bag.mcap"


def _intact() -> list[tuple[str, str, int, bytes]]:
    return [(m.topic, m.msgtype, m.timestamp_ns, m.rawdata) for m in iter_bag(SAMPLE)]


def test_intact_file_gives_every_message_in_bag_order():
    got = [tuple(m) for m in McapSalvage(MCAP).scan()]
    assert got == _intact()
    assert mcap_files(SAMPLE) == [MCAP] and mcap_files(MCAP) == [MCAP]


@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9])
def test_truncated_file_gives_a_prefix_up_to_the_cut(tmp_path, frac):
    data = MCAP.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * frac)])
    s = McapSalvage(cut)
    got = [tuple(m) for m in s.scan()]
    intact = _intact()
    assert 0 < len(got) < len(intact)
    assert sorted(got, key=lambda m: (m[2], m[0])) == sorted(
        intact[: len(got)], key=lambda m: (m[2], m[0]))
    assert s.truncated_at is not None and 8 < s.truncated_at <= int(len(data) * frac)
    topics = {m[0] for m in McapSalvage(cut).scan({"/events"}, with_data=False)}
    assert topics == {"/events"}


def test_damaged_chunk_is_skipped_and_later_chunks_still_read(tmp_path):
    data = bytearray(MCAP.read_bytes())
    data[700_000:700_016] = bytes(b ^ 0xFF for b in data[700_000:700_016])
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))
    s = McapSalvage(bad)
    got = [tuple(m) for m in s.scan()]
    intact = _intact()
    assert len(s.bad_chunks) == 1 and "skipped" in s.bad_chunks[0]
    assert 0 < len(got) < len(intact) and set(got) < set(intact)
    assert got[-1] == intact[-1]  # chunks after the damaged one are read


def test_not_an_mcap_file(tmp_path):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not a bag" * 10)
    with pytest.raises(ValueError, match="not an mcap file"):
        list(McapSalvage(junk).scan())
