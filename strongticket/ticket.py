"""Tickets: a found subnetwork as config + seed + bit-packed masks, in a safetensors file (no pickle).

File layout (safetensors):
  tensors   ``mask.<i>``       uint8 (⌈n_i/8⌉,)  bit-packed mask of masked layer i (flat order, LSB first)
            ``bias_mask.<i>``  uint8             bit-packed bias mask, for layers with bias scores
            ``scores.<i>``     float32 (shape_i) optional, the scores the mask was taken from
            ``generation.<i>`` uint8/uint16/int32 (shape_i), IteRand tickets: the re-randomization event that last
                               re-drew each weight (0: never), i.e. which generation of the seeded init it is
            ``state.<name>``   the model's other state: batch-norm statistics, learned affine parameters
  metadata  ``format``          "strongticket-ticket/2"
            ``config``          the resolved search config (JSON): model, widths, init, density, seed, …
            ``layers``          JSON list of {"shape", "kept"} per masked layer
            ``data_sha256``     SHA-256 of every tensor's bytes, by tensor name: catches corruption
            ``weights_sha256``  SHA-256 of the float32 frozen weights (and frozen biases) regenerated from the
                                seed, in layer order: proves the weights on load are the ones searched over
            ``summary``         the run's summary (JSON), for comparison by ``strongticket eval``
            ``header_sha256``   SHA-256 of all the other metadata fields (:func:`strongticket.files.metadata_sha256`):
                                an edited config, label or summary is refused like a flipped mask bit

Versions: ``strongticket-ticket/1`` (before the header hash) is refused with one line saying so: its config and
summary cannot be verified, and a file that says /1 could be a /2 file with its hash stripped. The search that made
it, run again (a new ``--out``), gives the same masks bit for bit in the current format.

The weights are exactly reproducible on every CPU (``strongticket.random`` builds them from Philox integer
words with IEEE basic operations only), so hashing their float32 bytes is sound. About 1 bit per weight.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .files import atomic_write, metadata_sha256
from .masks import pack_mask, unpack_mask
from .nn import MaskedLayer, masked_layers, other_state

__all__ = [
    "TICKET_FORMAT",
    "TicketError",
    "Ticket",
    "check_layers",
    "check_ticket_shapes",
    "json_field",
    "save_ticket",
    "read_ticket",
    "ticket_kind",
    "data_sha256",
    "read_checked_safetensors",
    "safetensors_header",
    "weights_sha256",
]

TICKET_FORMAT = "strongticket-ticket/2"


class TicketError(ValueError):
    """A ticket file that is missing, truncated, corrupted or does not match its weights."""


def weights_sha256(layers: Sequence[MaskedLayer]) -> str:
    """SHA-256 of the frozen float32 weights (and biases) of ``layers``, little-endian, in order."""
    h = hashlib.sha256()
    for layer in layers:
        for t in (layer.weight, layer.bias):
            if t is not None:
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def data_sha256(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's name and bytes, in name order: what a file's ``data_sha256`` records."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + b"\0" + np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()


def save_ticket(path: str | Path, model: nn.Module, config: dict[str, Any], summary: dict[str, Any],
                *, save_scores: bool = False) -> Path:
    """Write the current masks of ``model`` as a ticket at ``path`` (atomically)."""
    from safetensors.numpy import save

    layers = masked_layers(model)
    tensors: dict[str, np.ndarray] = {f"mask.{i}": pack_mask(layer.mask) for i, layer in enumerate(layers)}
    for i, layer in enumerate(layers):
        if layer.bias_mask is not None:
            tensors[f"bias_mask.{i}"] = pack_mask(layer.bias_mask)
    tensors.update({f"state.{k}": v.cpu().numpy() for k, v in other_state(model).items()})
    if save_scores:
        tensors.update({f"scores.{i}": layer.scores.detach().cpu().float().numpy()
                        for i, layer in enumerate(layers)})
    for i, layer in enumerate(layers):
        if layer.generation is not None:
            tensors[f"generation.{i}"] = _smallest_uint(layer.generation.cpu().numpy())
    metadata = {
        "format": TICKET_FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "layers": json.dumps([{"shape": list(layer.weight.shape), "kept": layer.kept()} for layer in layers]),
        "data_sha256": data_sha256(tensors),
        "weights_sha256": weights_sha256(layers),
        "summary": json.dumps(summary, sort_keys=True),
    }
    metadata["header_sha256"] = metadata_sha256(metadata)
    return atomic_write(path, save(tensors, metadata=metadata))


def _smallest_uint(values: np.ndarray) -> np.ndarray:
    top = int(values.max(initial=0))
    return values.astype(np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.int32)


class Ticket:
    """A ticket read from disk and checked for truncation and corruption (the weights are checked later)."""

    def __init__(self, path: Path, config: dict[str, Any], layers: list[dict[str, Any]],
                 masks: list[torch.Tensor], bias_masks: list[torch.Tensor | None], state: dict[str, torch.Tensor],
                 scores: list[torch.Tensor] | None, weights_sha256: str, summary: dict[str, Any],
                 generations: list[torch.Tensor | None] | None = None) -> None:
        self.path, self.config, self.layers = path, config, layers
        self.masks, self.bias_masks, self.state = masks, bias_masks, state
        self.scores, self.weights_sha256, self.summary = scores, weights_sha256, summary
        self.generations = generations or [None] * len(layers)

    def apply(self, model: nn.Module) -> None:
        """Check ``model``'s regenerated weights against the ticket's hash, then fix its masks."""
        layers = masked_layers(model)
        if [list(lay.weight.shape) for lay in layers] != [meta["shape"] for meta in self.layers]:
            raise TicketError(f"{self.path}: the model built from the ticket's config has other layer shapes "
                              f"than the ticket records")
        got = weights_sha256(layers)
        if got != self.weights_sha256:
            raise TicketError(f"{self.path}: weights regenerated from seed {self.config.get('seed')} do not match "
                              f"the searched ones (sha256 {got[:16]}… != {self.weights_sha256[:16]}…)")
        expected = set(other_state(model))
        if expected != set(self.state):
            missing = sorted(expected - set(self.state)) or sorted(set(self.state) - expected)
            raise TicketError(f"{self.path}: the ticket's stored state does not fit the model (e.g. {missing[0]!r})")
        try:
            model.load_state_dict(self.state, strict=False)
        except RuntimeError as e:
            raise TicketError(f"{self.path}: the ticket's stored state does not fit the model "
                              f"({' '.join(str(e).split())[:160]})") from None
        for layer, mask, bias_mask, generation in zip(layers, self.masks, self.bias_masks, self.generations):
            try:
                layer.fix_mask(mask, bias_mask)
                if generation is not None:  # IteRand: re-draw the weights the search re-drew, from the seed
                    layer.load_generation(generation.to(layer.weight.device))
            except ValueError as e:
                raise TicketError(f"{self.path}: {e}") from None


def check_ticket_shapes(ticket: Ticket, shapes: Sequence[Sequence[int]]) -> None:
    """Before a model is built: the masked layer ``shapes`` its config implies must be the ones whose masks the
    ticket stores (so a small file cannot ask for a large network)."""
    recorded = [list(lay["shape"]) for lay in ticket.layers]
    if [list(s) for s in shapes] != recorded:
        implied = sum(math.prod(s) for s in shapes)
        stored = sum(math.prod(s) for s in recorded)
        raise TicketError(f"{ticket.path}: the ticket's config implies {len(shapes)} masked layers of {implied:,} "
                          f"weights, its masks record {len(recorded)} layers of {stored:,} (a damaged or edited file)")


def safetensors_header(path: Path, error: type[ValueError] = None, noun: str = "ticket") -> dict[str, Any]:
    """The JSON header of a safetensors file, checked for a missing file, truncation and a malformed table.

    Problems raise ``error`` (default :class:`TicketError`) with one line naming ``path`` and what is wrong.
    """
    error = error or TicketError
    if not path.is_file():
        raise error(f"{path}: {noun} file not found")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise error(f"{path}: truncated {noun} ({size} bytes, not even a safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise error(f"{path}: truncated {noun} (header claims {n} bytes, file has {size - 8})")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise error(f"{path}: corrupted {noun} (header is not valid JSON)") from None
        except RecursionError:
            raise error(f"{path}: corrupted {noun} (header JSON is nested too deeply)") from None
    if not isinstance(header, dict):
        raise error(f"{path}: corrupted {noun} (header is not a JSON object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise error(f"{path}: corrupted {noun} (metadata is not a table of strings)")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        raise error(f"{path}: corrupted {noun} (malformed tensor table)") from None
    if 8 + n + max(ends, default=0) > size:
        raise error(f"{path}: truncated {noun} (tensor data ends past the end of the file)")
    return header


def read_checked_safetensors(path: Path, fmt: str, error: type[ValueError] = None, noun: str = "ticket",
                             ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors file of format ``fmt`` whose ``header_sha256`` matches its metadata
    and whose ``data_sha256`` matches its tensors; an older version of ``fmt`` is refused with one line."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    error = error or TicketError
    meta = safetensors_header(path, error, noun).get("__metadata__") or {}
    family = fmt.rsplit("/", 1)[0]
    found = meta.get("format")
    if found != fmt:
        if isinstance(found, str) and found.startswith(family + "/"):
            raise error(f"{path}: {noun} format {found} is not readable by this version (it reads {fmt}, whose "
                        f"header is hashed); {_REWRITE_HINT.get(family, 'write the file again')}")
        raise error(f"{path}: not a {family} file (format {found!r}, expected {fmt!r})")
    if meta.get("header_sha256") != metadata_sha256(meta):
        raise error(f"{path}: corrupted {noun} (metadata do not match their SHA-256: an edited or damaged header)")
    try:
        tensors = load(path.read_bytes())
    except SafetensorError as e:
        raise error(f"{path}: corrupted {noun} ({type(e).__name__}: {e})") from None
    if data_sha256(tensors) != meta.get("data_sha256"):
        raise error(f"{path}: corrupted {noun} (tensor bytes do not match their SHA-256)")
    return tensors, meta


_REWRITE_HINT = {
    "strongticket-ticket": "run the search that made it again with a new --out (same masks, bit for bit)",
    "strongticket-packed": "export the ticket again",
    "strongticket-state-dict": "export the ticket again",
}


def json_field(path: Path, meta: dict[str, str], key: str, kind: type, error: type[ValueError] = None,
               noun: str = "ticket", default: str | None = None) -> Any:
    """Metadata field ``key`` of ``path`` parsed as JSON of type ``kind``, or one line saying what is wrong."""
    error = error or TicketError
    text = meta.get(key, default)
    if text is None:
        raise error(f"{path}: corrupted {noun} (metadata field {key!r} is missing)")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"{path}: corrupted {noun} (metadata field {key!r} is not valid JSON: {type(e).__name__})") \
            from None
    if not isinstance(value, kind):
        raise error(f"{path}: corrupted {noun} (metadata field {key!r} must be a JSON {kind.__name__}, "
                    f"got {type(value).__name__})")
    return value


def check_layers(path: Path, layers: list[Any], error: type[ValueError] = None, noun: str = "ticket") -> None:
    """``layers`` metadata: a list of {"shape": [positive ints], "kept": int in [0, numel]}."""
    error = error or TicketError
    for i, lay in enumerate(layers):
        shape = lay.get("shape") if isinstance(lay, dict) else None
        kept = lay.get("kept") if isinstance(lay, dict) else None
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
                or not isinstance(kept, int) or isinstance(kept, bool) or not 0 <= kept <= math.prod(shape)):
            raise error(f"{path}: corrupted {noun} (layers[{i}] must be {{'shape': [positive ints], 'kept': int "
                        f"in [0, numel]}}, got {str(lay)[:80]})")


def ticket_kind(path: str | Path) -> str:
    """``"search"`` or ``"theory"``: what made a ticket, read from its header only (the full read checks the rest)."""
    path = Path(path)
    meta = safetensors_header(path).get("__metadata__") or {}
    kind = json_field(path, meta, "config", dict, default="{}").get("kind", "search")
    if kind not in ("search", "theory"):
        raise TicketError(f"{path}: corrupted ticket (config kind must be search or theory, got {str(kind)[:40]!r})")
    return kind


def read_ticket(path: str | Path) -> Ticket:
    """Read and check a ticket; a missing, truncated or corrupted file raises :class:`TicketError` (one line)."""
    path = Path(path)
    tensors, meta = read_checked_safetensors(path, TICKET_FORMAT)
    config = json_field(path, meta, "config", dict)
    layers = json_field(path, meta, "layers", list)
    summary = json_field(path, meta, "summary", dict, default="{}")
    check_layers(path, layers)
    try:
        packed = [tensors[f"mask.{i}"] for i in range(len(layers))]
    except KeyError as e:
        raise TicketError(f"{path}: corrupted ticket (tensor {e} is missing)") from None
    packed_bias = [tensors.get(f"bias_mask.{i}") for i in range(len(layers))]
    try:
        masks = [unpack_mask(p, lay["shape"]) for p, lay in zip(packed, layers)]
        bias_masks = [None if p is None else unpack_mask(p, lay["shape"][:1]) for p, lay in zip(packed_bias, layers)]
    except ValueError as e:
        raise TicketError(f"{path}: corrupted ticket ({e})") from None
    for i, (m, lay) in enumerate(zip(masks, layers)):
        if int(m.sum()) != lay["kept"]:
            raise TicketError(f"{path}: corrupted ticket (layer {i} keeps {int(m.sum())}, recorded {lay['kept']})")
    scores = None
    if "scores.0" in tensors:
        try:
            scores = [torch.from_numpy(tensors[f"scores.{i}"].copy()) for i in range(len(layers))]
        except KeyError as e:
            raise TicketError(f"{path}: corrupted ticket (tensor {e} is missing)") from None
    state = {k[len("state."):]: torch.from_numpy(v.copy()) for k, v in tensors.items() if k.startswith("state.")}
    generations = [tensors.get(f"generation.{i}") for i in range(len(layers))]
    try:
        generations = [None if g is None else torch.from_numpy(g.astype(np.int32)).view(lay["shape"])
                       for g, lay in zip(generations, layers)]
    except RuntimeError as e:
        raise TicketError(f"{path}: corrupted ticket (generation: {e})") from None
    return Ticket(path, config, layers, masks, bias_masks, state, scores, meta.get("weights_sha256", ""), summary,
                  generations)
