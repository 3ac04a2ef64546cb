"""Ticket files: round trip, and one clear line for every way a file can be wrong."""

import json

import pytest
import torch
from safetensors.numpy import load, save

from strongticket.config import SearchConfig
from strongticket.evaluate import load_ticket_model
from strongticket.files import metadata_sha256
from strongticket.search import run_search
from strongticket.ticket import TicketError, read_ticket


@pytest.fixture(scope="module")
def ticket_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run_search(SearchConfig(out=str(folder), widths=(24,), epochs=1, batch_size=256, save_scores=True),
               progress=False)
    return folder / "ticket.safetensors"


def _rewrite(src, dst, edit_tensors=None, edit_meta=None):
    raw = src.read_bytes()
    from safetensors import safe_open

    with safe_open(str(src), "np") as fh:
        meta = dict(fh.metadata())
    tensors = load(raw)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    dst.write_bytes(save(tensors, metadata=meta))
    return dst


def test_ticket_round_trips_masks_scores_and_config(ticket_path):
    ticket = read_ticket(ticket_path)
    assert ticket.config["widths"] == [24] and ticket.config["seed"] == 0
    assert [m.shape for m in ticket.masks] == [torch.Size([24, 64]), torch.Size([10, 24])]
    assert [int(m.sum()) for m in ticket.masks] == [lay["kept"] for lay in ticket.layers] == [768, 120]
    assert ticket.scores is not None and ticket.scores[0].dtype == torch.float32
    model, _, _ = load_ticket_model(ticket_path, device="cpu")
    assert all(torch.equal(layer.mask, m) for layer, m in zip(model.net[1::2], ticket.masks))


def test_missing_ticket(tmp_path):
    with pytest.raises(TicketError, match="ticket file not found"):
        read_ticket(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_truncated_ticket_says_truncated(ticket_path, tmp_path, keep):
    raw = ticket_path.read_bytes()
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(raw[:keep] if keep >= 0 else raw[:keep])
    with pytest.raises(TicketError, match="truncated ticket"):
        read_ticket(bad)


def test_flipped_mask_byte_says_corrupted(ticket_path, tmp_path):
    raw = bytearray(ticket_path.read_bytes())
    raw[-3000] ^= 0x10  # inside the tensor data
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(TicketError, match=r"corrupted ticket"):
        read_ticket(bad)


def test_garbled_header_says_corrupted(ticket_path, tmp_path):
    raw = bytearray(ticket_path.read_bytes())
    raw[10:14] = b"\xff\xfe\x00{"
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(TicketError, match="corrupted ticket"):
        read_ticket(bad)


def test_other_seed_says_weights_do_not_match(ticket_path, tmp_path):
    def other_seed(meta, rehash):
        cfg = json.loads(meta["config"])
        cfg["seed"] = 1
        meta["config"] = json.dumps(cfg)
        if rehash:  # a forger who also recomputes the header's checksum
            meta["header_sha256"] = metadata_sha256(meta)

    bad = _rewrite(ticket_path, tmp_path / "t.safetensors", edit_meta=lambda m: other_seed(m, False))
    with pytest.raises(TicketError, match="metadata do not match their SHA-256"):
        load_ticket_model(bad, device="cpu")
    bad = _rewrite(ticket_path, tmp_path / "t.safetensors", edit_meta=lambda m: other_seed(m, True))
    with pytest.raises(TicketError, match="weights regenerated from seed 1 do not match the searched ones"):
        load_ticket_model(bad, device="cpu")


def test_not_a_ticket(ticket_path, tmp_path):
    bad = _rewrite(ticket_path, tmp_path / "t.safetensors", edit_meta=lambda m: m.update(format="other"))
    with pytest.raises(TicketError, match="not a strongticket-ticket file"):
        read_ticket(bad)


def test_errors_are_one_line(ticket_path, tmp_path):
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(ticket_path.read_bytes()[:50])
    with pytest.raises(TicketError) as info:
        read_ticket(bad)
    assert "\n" not in str(info.value)
