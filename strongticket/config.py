"""Frozen dataclass configs that generate their own command-line flags, load from TOML/JSON, and hash.

Precedence: dataclass defaults < a preset (``--preset NAME``, :mod:`strongticket.search.presets`: an original
protocol) < ``--config run.toml|run.json`` < flags given on the command line; in Python, ``SearchConfig(preset=NAME,
**fields)`` lets the fields given win over the preset.
Every field is validated on construction; a bad value raises ``ValueError`` with one line naming the field,
the allowed range and the value. Fields marked ``hashed=False`` (output folder, device) do not change the
result and are left out of :meth:`SearchConfig.digest`, which names the run folder, so re-running the same
command finds and resumes its run. Fields marked ``hashed="if-set"`` (added after runs existed, e.g. ``rounds``)
enter the digest only when they differ from their default, so older run folders keep their names.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.splits import DATASETS
from .masks import validate_density
from .models import MODELS
from .search import presets
from .search.methods import METHODS, PRUNE_AT_INIT, SIGNED_KEY, TOP_K

MODEL_NAMES = tuple(MODELS)

__all__ = ["SearchConfig", "add_config_arguments", "config_from_args", "load_config_file", "model_label"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _f(default: Any, help: str, hashed: bool | str = True, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "hashed": hashed, "choices": choices}
    if isinstance(default, (list, dict)):
        raise TypeError("configs hold immutable values only")
    return field(default=default, metadata=meta)


SCOPES = ("layer", "global")
ALGOS = tuple(METHODS)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a mask search; the resolved copy is written to ``config.json``."""

    data: str = _f("digits", "data set (digits ships with the package; the others are read from --data-root)",
                   choices=DATASETS)
    data_root: str | None = _f(None, "folder holding the data files (not needed for digits)", hashed=False)
    model: str = _f("mlp", "model name", choices=MODEL_NAMES)
    widths: tuple[int, ...] | None = _f(None, "hidden widths of the fully connected layers of mlp and convN, "
                                        "comma-separated (default: mlp 512,512; convN 256,256); transformer: "
                                        "d_model,d_ff (default 64,128)")
    width: float = _f(1.0, "width multiplier of every layer but the classifier (e.g. 2 for a wide ResNet)")
    depth: int = _f(2, "transformer: number of blocks (attention + feed-forward)", hashed="if-set")
    heads: int = _f(4, "transformer: attention heads (d_model must be divisible by them)", hashed="if-set")
    share_weights: bool = _f(False, "layers of the same weight shape compute with one frozen random matrix (each "
                             "its own scores and mask; Shen et al. 2021)", hashed="if-set")
    algo: str = _f("edge-popup", "search method (see strongticket.search.methods)", choices=ALGOS)
    density: float = _f(0.5, "fraction of weights kept, in (0, 1]; sparsity = 1 - density")
    scope: str = _f("layer", "top-k per layer, or one global threshold", choices=SCOPES)
    init: str = _f("signed_constant", "frozen weight init",
                   choices=("signed_constant", "kaiming_normal", "kaiming_uniform", "glorot_normal", "uniform"))
    scale_fan: bool = _f(False, "scale the init's fan-in by the density")
    weights: str = _f("stored", "frozen weights stored on the device, or seeded: regenerated inside the kernels "
                      "from the seed (signed_constant linear layers; same masks bit for bit)",
                      hashed=False, choices=("stored", "seeded"))
    bias: bool = _f(False, "give masked layers a frozen random bias")
    bias_scores: bool = _f(False, "mask the biases too, by their own scores (needs --bias)")
    bias_density: float | None = _f(None, "fraction of each layer's biases kept, in (0, 1], fixed whatever the weight "
                                    "density does (needs masked biases: --bias-scores or a planted model; default: "
                                    "the weight density)", hashed="if-set")
    learn_bn: bool = _f(False, "make batch norm affine and train it with the scores (resnets)")
    epochs: int = _f(40, "passes over the training split")
    batch_size: int = _f(64, "examples per step")
    lr: float = _f(0.2, "peak learning rate of the scores (cosine schedule)")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(0.0, "weight decay on the scores")
    seed: int = _f(0, "seed of the frozen weights and the initial scores, in [0, 2**32)")
    data_seed: int = _f(0, "seed of the batch order, in [0, 2**32)")
    val_fraction: float = _f(0.1, "fraction of the training data held out for model selection")
    train_examples: int | None = _f(None, "train on the first N examples of the training split only (after the "
                                    "validation split is carved out; validation and test unchanged): a quick run on "
                                    "a slice (default: all)", hashed="if-set")
    augment: bool = _f(True, "standard augmentation where the data set has one (CIFAR: random crop + flip)")
    save_scores: bool = _f(False, "also store the fp32 scores in the ticket (32x larger)")
    out: str | None = _f(None, "run folder (default runs/<name>-<config hash>)", hashed=False)
    tensorboard: bool = _f(False, "also log scalars for TensorBoard under <run>/tensorboard", hashed=False)
    device: str = _f("auto", "where to run", hashed=False, choices=DEVICES)
    max_params: int = _f(1 << 28, "refuse a model with more masked weights than this, before any is drawn",
                         hashed=False)
    rounds: int = _f(1, "rounds of pruning at initialization (random, magnitude, snip, grasp, synflow): density "
                     "density**(r/rounds) in round r, re-scored in between; 1 = single shot", hashed="if-set")
    anneal_epochs: int = _f(0, "annealed-edge-popup: epochs T over which the density falls as density**(e/T) "
                            "(0: all epochs)", hashed="if-set")
    rerand_every: int = _f(0, "iterand: re-randomize pruned weights every this many steps (0: after every epoch "
                           "but the last)", hashed="if-set")
    rerand_lambda: float = _f(0.1, "iterand: probability that a pruned weight is re-drawn at an event, in (0, 1]",
                              hashed="if-set")
    penalty: float = _f(1e-4, "gem-miner: lambda of the L2 penalty lambda*||p||^2 on the scores", hashed="if-set")
    freeze_rounds: int = _f(0, "gem-miner: rounds of iterative freezing, spread over the epochs (0: one per epoch "
                            "but the last)", hashed="if-set")
    freeze_every: int = _f(0, "gem-miner: a freezing round every this many epochs instead, after epochs T+1, 2T+1, ... "
                           "before the last (Sreenivasan et al.'s iter_period; 0: --freeze-rounds decides)",
                           hashed="if-set")
    score_init: str = _f("method", "initial scores: method = each method's own (edge-popup U(+-1/sqrt(fan_in)), "
                         "supermask logit(density), gem-miner U[0, 1]); kaiming-uniform = U(+-sqrt(6/fan_in)) "
                         "(IteRand; top-k methods); constant = --score-constant everywhere (supermask; Zhou et al.: 0)",
                         hashed="if-set", choices=("method", "kaiming-uniform", "constant"))
    score_constant: float = _f(0.0, "the value of --score-init constant", hashed="if-set")
    score_key: str = _f("abs", "what the top-k ranks: abs = |S|, dS = G*W*sign(S) (edge-popup); signed = S, dS = G*W "
                        "(IteRand's code)", hashed="if-set", choices=("abs", "signed"))
    supermask_cap: bool = _f(True, "supermask: cap the mask 1[sigmoid(S) > 1/2] at the ceil(density*n) largest scores "
                             "(off: no density target, as Zhou et al.)", hashed="if-set")
    eval_samples: int = _f(0, "supermask: score validation and test by the mean over this many sampled masks (Zhou et "
                           "al.: 10; 0: the deterministic mask); the ticket stores the deterministic mask",
                           hashed="if-set")
    lr_schedule: str = _f("cosine-step", "cosine-step (ours: cosine per optimizer step, down to 0), cosine-epoch "
                          "(lr*(1+cos(pi*e/E))/2 in epoch e = 0..E-1, as the originals), constant", hashed="if-set",
                          choices=("cosine-step", "cosine-epoch", "constant"))
    select_epoch: str = _f("best-val", "the epoch the ticket comes from: best-val (ours: best validation metric, ties "
                           "to the later epoch) or last", hashed="if-set", choices=("best-val", "last"))
    preset: str | None = _f(None, f"an original protocol, one of {', '.join(presets.PRESETS)} (docs/presets.md): sets "
                            "every field not given; a field given in --config or as a flag overrides it",
                            hashed=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        validate_density(self.density)
        _check_int("epochs", self.epochs, 1, 100_000)
        _check_int("batch_size", self.batch_size, 1, 1 << 20)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("data_seed", self.data_seed, 0, 2**32 - 1)
        _check_int("max_params", self.max_params, 1, 1 << 40)
        if self.widths is not None:
            if len(self.widths) == 0:
                raise ValueError("widths must list at least one hidden width, got none")
            if self.model.startswith("resnet"):
                raise ValueError(f"widths applies to mlp and convN models, not {self.model}; use --width")
            for i, w in enumerate(self.widths):
                _check_int(f"widths[{i}]", w, 1, 1 << 20)
            if self.model == "transformer" and len(self.widths) != 2:
                raise ValueError(f"widths of transformer must be d_model,d_ff (2 values), got {list(self.widths)}")
        _check_int("depth", self.depth, 1, 64)
        _check_int("heads", self.heads, 1, 64)
        for name in ("depth", "heads"):
            if getattr(self, name) != _DEFAULTS[name] and self.model != "transformer":
                raise ValueError(f"{name} applies to model transformer only, got model {self.model!r}")
        if self.model == "transformer":
            d_model = max(1, round((self.widths or (64, 128))[0] * self.width))
            if d_model % self.heads:
                raise ValueError(f"heads must divide d_model ({d_model}: widths[0] x width), got heads {self.heads}")
        if self.model == "transformer" and not self.data.startswith("seq-"):
            raise ValueError(f"model transformer needs a token-sequence data set (seq-sort, seq-reverse), "
                             f"got data {self.data!r}")
        if self.model != "transformer" and self.data.startswith("seq-"):
            raise ValueError(f"data {self.data} is token sequences: it needs model transformer, got {self.model!r}")
        if self.share_weights and self.model.startswith("planted"):
            raise ValueError("share_weights does not apply to planted models (their weights are the planted ones)")
        _check_float("width", self.width, 0.0, 64.0, low_open=True)
        if self.weights == "seeded" and self.init != "signed_constant":
            raise ValueError(f"weights=seeded needs init signed_constant (1 random bit per weight), got {self.init!r}")
        if self.bias_scores and not self.bias:
            raise ValueError("bias_scores needs bias: there is no bias to mask; add --bias")
        _check_float("lr", self.lr, 0.0, 1e6, low_open=True)  # beyond, fp32 scores overflow on the first step
        _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0, math.inf)
        _check_float("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if self.train_examples is not None:
            _check_int("train_examples", self.train_examples, 1, 1 << 40)
        _check_int("rounds", self.rounds, 1, 10_000)
        if self.rounds > 1 and self.algo not in PRUNE_AT_INIT:
            raise ValueError(f"rounds > 1 needs a pruning-at-init algo ({', '.join(PRUNE_AT_INIT)}), "
                             f"got algo {self.algo!r}")
        _check_int("anneal_epochs", self.anneal_epochs, 0, self.epochs)
        if self.anneal_epochs and self.algo != "annealed-edge-popup":
            raise ValueError(f"anneal_epochs needs algo annealed-edge-popup, got algo {self.algo!r}")
        _check_int("rerand_every", self.rerand_every, 0, 1 << 40)
        _check_float("rerand_lambda", self.rerand_lambda, 0.0, 1.0, low_open=True)
        _check_float("penalty", self.penalty, 0.0, math.inf)
        _check_int("freeze_rounds", self.freeze_rounds, 0, max(self.epochs - 1, 0))
        for name, algo in (("rerand_every", "iterand"), ("rerand_lambda", "iterand"), ("penalty", "gem-miner"),
                           ("freeze_rounds", "gem-miner")):
            if getattr(self, name) != _DEFAULTS[name] and self.algo != algo:
                raise ValueError(f"{name} needs algo {algo}, got algo {self.algo!r}")
        self._check_protocol_fields()
        if self.algo == "gem-miner" and self.epochs < 2:
            raise ValueError(f"epochs must be an integer in [2, 100000] for gem-miner (a freezing round ends before "
                             f"the last epoch), got {self.epochs}")
        if self.weights == "seeded" and self.algo in ("supermask", "biprop", "iterand", "gem-miner"):
            raise ValueError(f"weights=seeded regenerates W = ±scale inside the kernels; algo {self.algo} computes "
                             f"with other weights or masks: use weights=stored")
        if self.bias_density is not None:
            validate_density(self.bias_density, "bias_density")
            if not (self.bias_scores or self.model.startswith("planted")):
                raise ValueError("bias_density needs masked biases: add --bias --bias-scores (planted models always "
                                 "mask their biases)")
            if self.algo in PRUNE_AT_INIT and self.bias_density < 1:
                raise ValueError(f"bias_density must be 1 for {self.algo}: pruning at init keeps every bias, "
                                 f"got {self.bias_density!r}")
        if self.algo in PRUNE_AT_INIT and (self.bias_scores or self.learn_bn):
            raise ValueError(f"bias_scores and learn_bn need a trained algo; {self.algo} does not train")
        if self.data_root is not None and not Path(self.data_root).expanduser().is_dir():
            raise ValueError(f"data_root must be an existing folder, got {self.data_root!r}")

    def _check_protocol_fields(self) -> None:
        """The fields the presets brought (score init and key, supermask's evaluation, Gem-Miner's period, the
        schedule, the epoch rule)."""
        _check_int("freeze_every", self.freeze_every, 0, max(self.epochs - 2, 0))
        if self.freeze_every and self.freeze_rounds:
            raise ValueError(f"give freeze_every or freeze_rounds, not both; got {self.freeze_every} and "
                             f"{self.freeze_rounds}")
        _check_int("eval_samples", self.eval_samples, 0, 10_000)
        _check_float("score_constant", self.score_constant, -math.inf, math.inf)
        needs = {"freeze_every": ("gem-miner",), "supermask_cap": ("supermask",), "eval_samples": ("supermask",),
                 "score_key": SIGNED_KEY}
        needs["score_init"] = {"kaiming-uniform": TOP_K, "constant": ("supermask",)}.get(self.score_init, METHODS)
        for name, algos in needs.items():
            if getattr(self, name) != _DEFAULTS[name] and self.algo not in algos:
                raise ValueError(f"{name} {getattr(self, name)!r} needs algo {' or '.join(algos)}, "
                                 f"got algo {self.algo!r}")
        if self.score_constant != 0 and self.score_init != "constant":
            raise ValueError(f"score_constant needs score_init constant, got score_init {self.score_init!r}")
        if self.preset is not None:
            presets.get(self.preset)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def digest(self) -> str:
        """SHA-256 (hex, 12 digits) of the fields that determine the result."""
        hashed = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.metadata.get("hashed", True) is True
                  or (f.metadata.get("hashed") == "if-set" and getattr(self, f.name) != f.default)}
        return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:12]

    def run_name(self) -> str:
        return f"{self.model}-{self.data}-{self.algo}-d{self.density:g}-s{self.seed}-{self.digest()}"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> SearchConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown field {unknown[0]!r}; valid fields: {', '.join(known)}")
        return cls(**{k: _coerce(k, known[k].type, v) for k, v in values.items()})


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
_dataclass_init = SearchConfig.__init__


def _init_with_preset(self: SearchConfig, *args: Any, **values: Any) -> None:
    """``SearchConfig(**values)``: with ``preset=NAME``, the preset's values fill every field not in ``values``."""
    if args:
        raise TypeError("SearchConfig takes keyword arguments only")
    name = values.get("preset")
    if name is None:
        return _dataclass_init(self, **values)
    density = validate_density(values.get("density", _DEFAULTS["density"]))
    given = presets.get(name).values(density)
    try:
        _dataclass_init(self, **{**given, **values})
    except ValueError as e:
        raise ValueError(f"{e} (preset {name} sets {', '.join(given)}; a field given explicitly overrides "
                         f"it)") from None


SearchConfig.__init__ = _init_with_preset  # type: ignore[method-assign]


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def model_label(cfg: SearchConfig) -> str:
    """``mlp``, ``mlp [64, 64]``, ``resnet20 ×2``: the model as a person reads it."""
    label = cfg.model
    if cfg.widths is not None:
        label += f" {list(cfg.widths)}"
    if cfg.width != 1:
        label += f" ×{cfg.width:g}"
    if cfg.model == "transformer":
        label += f" depth {cfg.depth} heads {cfg.heads}"
    if cfg.share_weights:
        label += " shared"
    return label


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


def _check_float(name: str, v: Any, lo: float, hi: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)
    if not ok:
        interval = f"{'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {v!r}")


def _base_type(annotation: Any) -> Any:
    hint = eval(annotation, vars(typing)) if isinstance(annotation, str) else annotation  # noqa: S307
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _coerce(name: str, annotation: Any, v: Any) -> Any:
    """Turn a value from a file or a flag into the field's type, with a clear error."""
    t = _base_type(annotation)
    if v is None:
        return None
    try:
        if typing.get_origin(t) is tuple:
            items = v.split(",") if isinstance(v, str) else list(v)
            return tuple(int(str(i).strip()) for i in items if str(i).strip())
        if t is bool:
            if isinstance(v, bool):
                return v
            if str(v).lower() in ("1", "true", "yes", "on"):
                return True
            if str(v).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if t in (int, float) and isinstance(v, bool):  # JSON/TOML true is not 1 epoch or density 1.0
            raise ValueError
        if t is int:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError
            return int(v)
        if t is float:
            return float(v)
        return str(v)
    except (TypeError, ValueError):
        kind = "comma-separated integers" if typing.get_origin(t) is tuple else getattr(t, "__name__", str(t))
        raise ValueError(f"{name} must be {kind}, got {v!r}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml`` or ``.json`` config; keys may use dashes or underscores."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file must be an existing .toml or .json file, got {str(path)!r}")
    try:
        if p.suffix == ".toml":
            raw = tomllib.loads(p.read_text())
        elif p.suffix == ".json":
            raw = json.loads(p.read_text())
        else:
            raise ValueError(f"config file must end in .toml or .json, got {str(path)!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {str(path)!r} is not valid {p.suffix[1:].upper()}: {e}") from None
    except RecursionError:
        raise ValueError(f"config file {str(path)!r} is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {str(path)!r} must hold a table/object of fields")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = SearchConfig) -> None:
    """One flag per field (``--batch-size``); defaults are suppressed so only given flags override."""
    parser.add_argument("--config", metavar="FILE", help="a .toml or .json file of fields; flags override it")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        t = _base_type(f.type)
        default = f.default if not isinstance(f.default, tuple) else ",".join(map(str, f.default))
        choices = f.metadata.get("choices")
        help_text = f"{f.metadata['help']}" + (f"; one of {', '.join(choices)}" if choices else "") + \
            f" (default: {default})"
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            # choices are checked by the dataclass, which says what is wrong in one line (argparse adds usage)
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def config_from_args(ns: argparse.Namespace, cls: type = SearchConfig) -> Any:
    """Merge defaults, the ``--config`` file and the flags given, then validate."""
    values: dict[str, Any] = {}
    if getattr(ns, "config", None):
        values.update(load_config_file(ns.config))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(ns).items() if k in names})
    return cls.from_dict(values, source=getattr(ns, "config", None) or "flags")
