"""Search methods behind one interface: a registry of small strategy objects that :func:`run_search` drives.

One meaning of density everywhere: the fraction of weights kept, k = ⌈density·n⌉ per layer (``--scope layer``)
or over all masked layers together (``--scope global``), ties broken by index (:mod:`strongticket.masks`).

Hooks a method may override (all default to "do nothing", so edge-popup's loop is unchanged bit for bit):
  * ``trains``            False for pruning-at-initialization methods: no score training, the mask comes from
                          :meth:`Method.prepare` alone and is evaluated as a normal (fixed-mask) ticket;
  * ``fused_optimizer``   whether the scores' SGD step may run inside the backward pass (``optim.ScoreSGD``, on the
                          Triton backend): False where the layers compute through a score rule or binary weights
                          (no fused path: supermask, gem-miner, biprop) or the method needs gradients on its own
                          path (pruning at initialization: SNIP / GraSP / SynFlow call ``autograd.grad``);
  * ``prepare(model, splits)``   before training and before a resumed run loads its checkpoint (compute
                          saliency scores and fix the mask; install a score rule; set initial scores);
  * ``density_at(epoch)`` the density trained at in 0-based ``epoch`` (schedules); only epochs at the target
                          density may be selected as the best epoch;
  * ``score_weight_decay()``  the weight decay of the scores' optimizer group (``--weight-decay``);
  * ``before_step(model, step)``, ``after_step(model, step)`` with ``step`` the optimizer steps done so far
                          (0-based before, 1-based after: resume-safe counters), ``after_epoch(model, epoch)``;
  * ``epoch_metrics(model, val)``  extra keys for the epoch's record;
  * ``state_dict()`` / ``load_state_dict(state)``  tensors the checkpoint must carry (Gem-Miner's frozen flags).

Every method's ticket keeps at most ⌈density·n⌉ weights: the top-k methods exactly that many; supermask and
gem-miner, whose masks are thresholds of their scores, up to that many (the summary reports the density found).

Methods (``--algo``):
  edge-popup            M = TopK(|S|), dS = G ⊙ W ⊙ sign(S); Ramanujan et al., CVPR 2020.
  annealed-edge-popup   edge-popup trained at density ρ^{min(1, e/T)} in epoch e = 1..E (T = ``anneal_epochs``,
                        default E): starts (nearly) dense, ends at the target ρ; Fischer & Burkholz, ICLR 2022.
  supermask             Bernoulli supermask (Zhou et al., NeurIPS 2019): p = σ(S), a fresh M ~ Bernoulli(p) every
                        training step (torch generator of the device seeded by (seed, layer, step)),
                        straight-through W ⊙ (M + p − sg(p)), so dS = σ'(S) ⊙ G ⊙ W. Scores start at logit(ρ)
                        (expected density ρ; Zhou's constant ``sigmoid_bias``). Evaluation and the ticket use the
                        deterministic mask 1[σ(S) > 1/2] capped at the ⌈ρ·n⌉ largest scores (per layer, or over
                        all layers with ``--scope global``); each epoch also logs ``sampled_val_<metric>`` (one
                        sampled mask) and ``expected_density`` (mean σ(S)). Use a large ``--lr`` (Zhou: 100).
  biprop                edge-popup's top-k and score gradient on binary weights α·sign(W) ⊙ M, α = mean |W| over
                        the kept weights of the layer (its actual count) (Diffenderfer & Kailkhura, ICLR 2021).
                        With signed-constant weights α = |W| and biprop is edge-popup. (The original's cubic
                        density ramp of its global mode is not built.)
  iterand               edge-popup plus re-randomization (Chijiwa et al., NeurIPS 2021): every ``rerand_every``
                        steps (0: after every epoch but the last), event r re-draws each pruned weight with
                        probability ``rerand_lambda`` (coin: uniform01 of stream STREAM_REDRAW, generation r) as
                        generation r of the layer's seeded init; the ticket stores each weight's last event.
                        |S| top-k with dS = G ⊙ W ⊙ sign(S), as edge-popup (the original selects on S without abs).
  gem-miner             Gem-Miner (Sreenivasan et al., NeurIPS 2022): scores p start U[0, 1] (seeded), M =
                        1[p > 1/2] ⊙ q, dS = G ⊙ W ⊙ q, loss + ``penalty``·‖p‖² (as weight decay 2·penalty),
                        p clamped to [0, 1] after every step; N = ``freeze_rounds`` (0: epochs − 1) rounds of
                        iterative freezing, after epochs ⌈j(E − 1)/N⌉, keep the ⌈ρ^{j/N}·n⌉ active entries of
                        largest |p| (per layer or global; biases per layer) and freeze the rest (q = 0). Only
                        epochs after the last round (active density ρ) can be selected.
  random, magnitude, snip, grasp, synflow
                        pruning at initialization, no training; ``rounds`` N ≥ 1 rounds at densities ρ^{r/N},
                        r = 1..N, re-scoring the surviving weights θ = W ⊙ M between rounds (Tanaka et al.,
                        NeurIPS 2020). Scores, higher = keep:
                          random     N(0, 1) from a generator seeded by (seed, round);
                          magnitude  |θ|;
                          snip       |θ ⊙ ∂L/∂θ| / Σ, L = cross-entropy on the prune set (Lee et al., ICLR 2019);
                          grasp      θ ⊙ (H g) / (|Σ| + ε), g = ∂L/∂θ at logits / 200 (Wang et al., ICLR 2020).
                                     Sign: GraSP removes the largest −θ ⊙ Hg, i.e. keeps the largest +θ ⊙ Hg
                                     (what Synaptic-Flow does despite its "negate" comment); pinned by a test;
                          synflow    |θ ⊙ ∂R/∂θ|, R = Σ f(1; |θ|), one all-ones input, eval mode, |bias|, batch-norm
                                     buffers untouched (the original abs()es them), data-free (Tanaka et al. 2020).
                        The prune set is the first 10 training examples of every class. Scores are turned into
                        ranks (exact in float32 up to 2**24 weights) so that signed scores select correctly under
                        the |S| top-k; pruned weights get rank 0, so a round only removes weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masks import keep_count, validate_density
from ..nn import MaskedConv2d, MaskedLayer, ScoreRule, masked_layers, version_key
from ..random import STREAM_BIAS_SCORES, STREAM_REDRAW, STREAM_SCORES, matrix_shape, uniform01

if TYPE_CHECKING:
    from ..config import SearchConfig
    from ..data.splits import Split, Splits

__all__ = [
    "Method",
    "EdgePopup",
    "AnnealedEdgePopup",
    "Supermask",
    "Biprop",
    "IteRand",
    "GemMiner",
    "PruneAtInit",
    "METHODS",
    "PRUNE_AT_INIT",
    "get",
    "build",
    "set_density",
    "saliency",
    "collapsed_layers",
]

PRUNE_SET_PER_CLASS = 10
GRASP_TEMPERATURE = 200.0
_EPS = 1e-10
_MAX_RANKED = 1 << 24  # float32 represents every integer rank up to here exactly


class Method:
    """Base strategy: train the popup scores at the config's density (edge-popup's behaviour)."""

    name = "edge-popup"
    trains = True
    fused_optimizer = True

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        """Called once before training (and before a resumed run continues), splits already on the device."""

    def density_at(self, epoch: int) -> float:
        """The density trained at in 0-based ``epoch``."""
        return self.cfg.density

    def score_weight_decay(self) -> float:
        """Weight decay of the scores' optimizer group."""
        return self.cfg.weight_decay

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before optimizer step ``step`` (0-based count of the steps already done)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step; ``step`` steps are done (1-based)."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after every epoch (0-based), before validation."""

    def epoch_metrics(self, model: nn.Module, val: Split) -> dict[str, Any]:
        """Extra keys for the epoch's record (after validation)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must carry besides the model and optimizer."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume (called after :meth:`prepare`)."""


class EdgePopup(Method):
    """Edge-popup (Ramanujan et al. 2020), per layer or global (``--scope``)."""

    name = "edge-popup"


class AnnealedEdgePopup(Method):
    """Edge-popup with density ρ^{min(1, e/T)} in epoch e = 1..E; the last T..E epochs train at ρ exactly."""

    name = "annealed-edge-popup"

    def density_at(self, epoch: int) -> float:
        horizon = self.cfg.anneal_epochs or self.cfg.epochs
        if epoch + 1 >= horizon:
            return self.cfg.density
        return self.cfg.density ** ((epoch + 1) / horizon)


class Biprop(Method):
    """Biprop (Diffenderfer & Kailkhura 2021): edge-popup on binary weights α·sign(W) ⊙ M. The layers' binary
    mode is part of the model (``model_from_config``), so a loaded ticket computes the same way."""

    name = "biprop"
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        if not all(layer.binary for layer in masked_layers(model)):
            raise ValueError("biprop needs binary layers: build the model with model_from_config(cfg)")


class IteRand(Method):
    """IteRand (Chijiwa et al. 2021): edge-popup + seeded re-randomization of pruned weights."""

    name = "iterand"

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        for layer in masked_layers(model):
            layer.enable_redraw()

    def after_step(self, model: nn.Module, step: int) -> None:
        every = self.cfg.rerand_every
        if every and step % every == 0:
            rerandomize(masked_layers(model), step // every, self.cfg.rerand_lambda)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if not self.cfg.rerand_every and epoch + 1 < self.cfg.epochs:
            rerandomize(masked_layers(model), epoch + 1, self.cfg.rerand_lambda)


@torch.no_grad()
def rerandomize(layers: list[MaskedLayer], event: int, probability: float) -> list[int]:
    """Re-randomization event ``event`` (>= 1): each pruned weight is re-drawn with ``probability``, as
    generation ``event`` of its layer's init; the coins are uniform01 of (seed, layer, STREAM_REDRAW,
    generation ``event``). Returns the number of weights re-drawn per layer."""
    counts = []
    for layer in layers:
        rows, cols = matrix_shape(tuple(layer.scores.shape))
        coins = torch.from_numpy(uniform01(layer.seed, layer.layer_index, STREAM_REDRAW, rows, cols, event))
        mask = layer.mask
        where = (coins.view(layer.scores.shape).to(mask.device) < probability) & ~mask
        layer.redraw(where, event)
        counts.append(int(where.sum()))
    return counts


class Supermask(Method):
    """Bernoulli supermask (Zhou et al. 2019) with a deterministic, density-capped evaluation mask."""

    name = "supermask"
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        self.rule = BernoulliRule(layers, self.cfg.seed)
        rho = min(max(self.cfg.density, 1e-6), 1 - 1e-6)
        logit = math.log(rho / (1 - rho))
        with torch.no_grad():
            for layer in layers:
                layer.rule = self.rule
                for s in (layer.scores, layer.bias_scores):
                    if s is not None:
                        s.fill_(logit)

    def before_step(self, model: nn.Module, step: int) -> None:
        self.rule.step = step

    @torch.no_grad()
    def epoch_metrics(self, model: nn.Module, val: Split) -> dict[str, Any]:
        from ..evaluate import evaluate, metric_key

        layers = masked_layers(model)
        p = torch.cat([torch.sigmoid(layer.scores.detach()).reshape(-1) for layer in layers])
        self.rule.sample_in_eval = True
        try:
            metric, _ = evaluate(model, val)
        finally:
            self.rule.sample_in_eval = False
        return {f"sampled_val_{metric_key(val.task)}": metric, "expected_density": float(p.double().mean())}


class BernoulliRule(ScoreRule):
    """Supermask's rule: sampled masks in training, the capped rounded mask otherwise."""

    def __init__(self, layers: list[MaskedLayer], seed: int) -> None:
        self.layers, self.seed = layers, seed
        self.step = 0
        self.sample_in_eval = False  # sampled-mask evaluation (its own stream)
        self._cache: dict[int, tuple[tuple, list[Tensor]]] = {}

    def _sampled(self, layer: MaskedLayer, scores: Tensor, which: int) -> Tensor:
        p = torch.sigmoid(scores)
        stream = "train" if layer.training else "eval"
        gen = torch.Generator(device=scores.device)
        gen.manual_seed(_mix(f"supermask:{stream}", self.seed, layer.layer_index, which, self.step))
        u = torch.rand(scores.shape, generator=gen, device=scores.device)
        return (u < p.detach()).to(p.dtype) + (p - p.detach())  # value M exactly; gradient σ'(S)

    def _sampling(self, layer: MaskedLayer) -> bool:
        return layer.training or self.sample_in_eval

    def weight(self, layer: MaskedLayer) -> Tensor:
        w = layer.current_weight
        if self._sampling(layer):
            return w * self._sampled(layer, layer.scores, 0)
        return w * self.mask(layer)

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        if self._sampling(layer):
            return layer.bias * self._sampled(layer, layer.bias_scores, 1)
        return layer.bias * self.bias_mask(layer)

    def mask(self, layer: MaskedLayer) -> Tensor:
        group = self.layers if layer._selector is not None else [layer]
        k = layer._selector.k if layer._selector is not None else layer.k
        key = (k, *(version_key(lay.scores) for lay in group))
        cached = self._cache.get(id(group[0]))
        if cached is None or cached[0] != key:
            cached = (key, top_positive([lay.scores for lay in group], k))
            self._cache[id(group[0])] = cached
        return cached[1][group.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        return top_positive([layer.bias_scores], layer.bias_k)[0]


def top_positive(scores: list[Tensor], k: int) -> list[Tensor]:
    """Masks of the (at most) ``k`` largest positive entries over ``scores`` together (σ(S) > 1/2 ⇔ S > 0),
    ties broken by position (list order, then flat index)."""
    return _top_eligible(scores, [s.detach() > 0 for s in scores], k, magnitude=False)


@torch.no_grad()
def _top_eligible(scores: list[Tensor], eligible: list[Tensor], k: int, *, magnitude: bool) -> list[Tensor]:
    """Masks of the (at most) ``k`` eligible entries of largest score (|score| with ``magnitude``) over ``scores``
    together; never an ineligible one; ties by position (list order, then flat index), exact in float64."""
    flat = torch.cat([s.detach().reshape(-1) for s in scores])
    ok = torch.cat([e.reshape(-1) for e in eligible])
    key = torch.where(ok, (flat.abs() if magnitude else flat).double(), -math.inf)
    keep = torch.zeros_like(ok)
    keep[torch.sort(key, descending=True, stable=True).indices[:k]] = True
    keep &= ok
    return [part.view(s.shape) for part, s in zip(keep.split([s.numel() for s in scores]), scores)]


def _mix(*parts: Any) -> int:
    """A 63-bit generator seed from ``parts`` (SHA-256): independent streams for every (seed, layer, step)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class GemMiner(Method):
    """Gem-Miner (Sreenivasan et al. 2022): rounded scores in [0, 1], L2 penalty, projection, iterative freezing."""

    name = "gem-miner"
    fused_optimizer = False

    def __init__(self, cfg: SearchConfig) -> None:
        super().__init__(cfg)
        rounds = cfg.freeze_rounds or cfg.epochs - 1
        self.freeze_after = [math.ceil(j * (cfg.epochs - 1) / rounds) for j in range(1, rounds + 1)]  # 1-based
        self.rounds = rounds

    def _round_density(self, j: int) -> float:
        return self.cfg.density if j >= self.rounds else self.cfg.density ** (j / self.rounds)

    def density_at(self, epoch: int) -> float:
        done = sum(1 for t in self.freeze_after if t <= epoch)  # rounds finished before 0-based epoch
        return 1.0 if done == 0 else self._round_density(done)

    def score_weight_decay(self) -> float:
        return self.cfg.weight_decay + 2.0 * self.cfg.penalty

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        self.rule = ThresholdRule(layers)
        with torch.no_grad():
            for layer in layers:
                layer.rule = self.rule
                for s, kind in ((layer.scores, STREAM_SCORES), (layer.bias_scores, STREAM_BIAS_SCORES)):
                    if s is not None:  # U[0, 1] from the words edge-popup's initial scores are made of
                        rows, cols = matrix_shape(tuple(s.shape))
                        u = uniform01(layer.seed, layer.layer_index, kind, rows, cols)
                        s.copy_(torch.from_numpy(u).view(s.shape))

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for layer in self.rule.layers:
                for s in (layer.scores, layer.bias_scores):
                    if s is not None:
                        s.clamp_(0.0, 1.0)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if epoch + 1 in self.freeze_after:
            j = self.freeze_after.index(epoch + 1) + 1
            self.rule.freeze(self._round_density(j), self.cfg.scope == "global")

    def state_dict(self) -> dict[str, Any]:
        return {"active": list(self.rule.active), "bias_active": list(self.rule.bias_active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("active", "bias_active"):
            for dst, src in zip(getattr(self.rule, name), state[name]):
                if dst is not None:
                    dst.copy_(src)


class ThresholdRule(ScoreRule):
    """Gem-Miner's rule: M = 1[p > 1/2] ⊙ q, straight-through to the active scores."""

    def __init__(self, layers: list[MaskedLayer]) -> None:
        self.layers = layers
        self.active = [torch.ones(lay.scores.shape, dtype=torch.bool, device=lay.scores.device) for lay in layers]
        self.bias_active = [None if lay.bias_scores is None else
                            torch.ones(lay.bias_scores.shape, dtype=torch.bool, device=lay.bias_scores.device)
                            for lay in layers]

    @staticmethod
    def _st(value: Tensor, scores: Tensor, active: Tensor) -> Tensor:
        mask = ((scores.detach() > 0.5) & active).to(value.dtype)
        if scores.requires_grad and torch.is_grad_enabled():
            return value * (mask + (scores - scores.detach()) * active)  # value W ⊙ M; dS = G ⊙ W ⊙ q
        return value * mask

    def weight(self, layer: MaskedLayer) -> Tensor:
        return self._st(layer.current_weight, layer.scores, self.active[self.layers.index(layer)])

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        return self._st(layer.bias, layer.bias_scores, self.bias_active[self.layers.index(layer)])

    def mask(self, layer: MaskedLayer) -> Tensor:
        return (layer.scores.detach() > 0.5) & self.active[self.layers.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        return (layer.bias_scores.detach() > 0.5) & self.bias_active[self.layers.index(layer)]

    @torch.no_grad()
    def freeze(self, density: float, global_scope: bool) -> None:
        """Keep active only the ⌈density·n⌉ active entries of largest |p| (over all layers when ``global_scope``;
        biases per layer), ties by position."""
        groups = [list(range(len(self.layers)))] if global_scope else [[i] for i in range(len(self.layers))]
        for group in groups:
            n = sum(self.layers[i].scores.numel() for i in group)
            kept = keep_active([self.layers[i].scores for i in group], [self.active[i] for i in group],
                               keep_count(density, n))
            for i, a in zip(group, kept):
                self.active[i] = a
        for i, layer in enumerate(self.layers):
            if layer.bias_scores is not None:
                self.bias_active[i] = keep_active([layer.bias_scores], [self.bias_active[i]],
                                                  keep_count(density, layer.bias_scores.numel()))[0]


def keep_active(scores: list[Tensor], active: list[Tensor], k: int) -> list[Tensor]:
    """The ``k`` active entries of largest |score| over ``scores`` together (fewer if fewer are active), ties by
    position (list order, then flat index)."""
    return _top_eligible(scores, active, k, magnitude=True)


class PruneAtInit(Method):
    """A pruning-at-initialization baseline: no training; ``rounds`` rounds of score-and-prune."""

    trains = False
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        kept = [torch.ones(layer.scores.shape, dtype=torch.bool, device=layer.scores.device) for layer in layers]
        prune_set = _prune_set(splits) if self.name in ("snip", "grasp") else None
        n = self.cfg.rounds
        for r in range(1, n + 1):
            density = self.cfg.density if r == n else self.cfg.density ** (r / n)
            scores = saliency(self.name, model, kept, prune_set=prune_set, input_shape=splits.input_shape,
                              seed=self.cfg.seed, round=r)
            ranks = _ranks(scores, kept)
            with torch.no_grad():
                for layer, rank in zip(layers, ranks):
                    layer.scores.copy_(rank)
            set_density(layers, density)
            kept = [layer.mask.clone() for layer in layers]
        for layer, mask in zip(layers, kept):  # weights only are scored: every bias is kept
            keep_bias = None if layer.bias_scores is None else torch.ones_like(layer.bias_scores, dtype=torch.bool)
            layer.fix_mask(mask, keep_bias)


def _pai(name: str) -> type[PruneAtInit]:
    return type(name.title().replace("-", "") + "Pruning", (PruneAtInit,), {"name": name,
                                                                           "__doc__": f"{name} pruning at init."})


PRUNE_AT_INIT = ("random", "magnitude", "snip", "grasp", "synflow")
METHODS: dict[str, type[Method]] = {
    "edge-popup": EdgePopup,
    "annealed-edge-popup": AnnealedEdgePopup,
    "supermask": Supermask,
    "biprop": Biprop,
    "iterand": IteRand,
    "gem-miner": GemMiner,
    **{name: _pai(name) for name in PRUNE_AT_INIT},
}


def get(name: str) -> type[Method]:
    """The method class registered as ``name``; the error lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"algo must be one of {', '.join(METHODS)}, got {name!r}") from None


def build(cfg: SearchConfig) -> Method:
    """The strategy object for ``cfg.algo``."""
    return get(cfg.algo)(cfg)


def set_density(layers: list[MaskedLayer], density: float) -> None:
    """Make ``layers`` keep ``density`` of their weights: through their shared global threshold if they have one."""
    validate_density(density)
    selector = layers[0]._selector if layers else None
    if selector is not None:
        selector.set_density(density)
    else:
        for layer in layers:
            layer.set_density(density)


def collapsed_layers(layers: list[MaskedLayer]) -> list[int]:
    """Positions (in module order) of the masked layers whose mask keeps no weight at all."""
    return [i for i, layer in enumerate(layers) if layer.kept() == 0]


# --------------------------------------------------------------------------------------------------- saliency


def saliency(name: str, model: nn.Module, kept: list[Tensor], *, prune_set: tuple[Tensor, Tensor] | None = None,
             input_shape: tuple[int, ...] | None = None, seed: int = 0, round: int = 1) -> list[Tensor]:
    """Scores (higher = keep) of every masked layer's weights θ = W ⊙ kept, per method ``name``."""
    layers = masked_layers(model)
    if len(kept) != len(layers):
        raise ValueError(f"kept must hold one mask per masked layer ({len(layers)}), got {len(kept)}")
    thetas = [(layer.weight.to(m.device) * m).detach() for layer, m in zip(layers, kept)]
    if name == "random":
        # the CPU generator keeps only 32 bits of its seed: mix (seed, round) into 32 bits by hashing
        digest = hashlib.sha256(f"strongticket.random-pruning:{seed}:{round}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
        return [torch.randn(t.shape, generator=gen).to(t.device) for t in thetas]
    if name == "magnitude":
        return [t.abs() for t in thetas]
    was_training = model.training
    model.eval()
    try:
        if name == "snip":
            return _snip(model, layers, thetas, _need(prune_set, name))
        if name == "grasp":
            return _grasp(model, layers, thetas, _need(prune_set, name))
        if name == "synflow":
            if input_shape is None:
                raise ValueError("synflow needs input_shape, got None")
            return _synflow(model, layers, thetas, input_shape)
    finally:
        model.train(was_training)
    raise ValueError(f"saliency name must be one of {', '.join(PRUNE_AT_INIT)}, got {name!r}")


def _need(prune_set: tuple[Tensor, Tensor] | None, name: str) -> tuple[Tensor, Tensor]:
    if prune_set is None:
        raise ValueError(f"{name} needs a prune set of (inputs, labels), got None")
    return prune_set


def _snip(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
          prune_set: tuple[Tensor, Tensor]) -> list[Tensor]:
    x, y = prune_set
    thetas = [t.requires_grad_() for t in thetas]
    with _plain_forward(layers, thetas):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), thetas)
    scores = [(t * g).detach().abs() for t, g in zip(thetas, grads)]
    return _normalise(scores, sum(float(s.sum()) for s in scores))


def _grasp(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
           prune_set: tuple[Tensor, Tensor]) -> list[Tensor]:
    x, y = prune_set
    thetas = [t.requires_grad_() for t in thetas]
    with _plain_forward(layers, thetas):
        g = [v.detach() for v in torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), thetas)]
        grads = torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), thetas, create_graph=True)
        hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, grads)), thetas)  # H g = ∇(gᵀ ∇L)
    scores = [(t * v).detach() for t, v in zip(thetas, hg)]
    return _normalise(scores, abs(sum(float(s.sum()) for s in scores)))


def _synflow(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
             input_shape: tuple[int, ...]) -> list[Tensor]:
    thetas = [t.abs().requires_grad_() for t in thetas]
    device = thetas[0].device
    ones = torch.ones((1, *input_shape), device=device)
    with _plain_forward(layers, thetas, absolute_bias=True):
        grads = torch.autograd.grad(model(ones).sum(), thetas)
    return [(t * g).detach().abs() for t, g in zip(thetas, grads)]


def _normalise(scores: list[Tensor], total: float) -> list[Tensor]:
    return [s / (total + _EPS) for s in scores]


@contextmanager
def _plain_forward(layers: list[MaskedLayer], thetas: list[Tensor], absolute_bias: bool = False) -> Iterator[None]:
    """Inside: every masked layer computes with the plain tensor θ (which autograd can differentiate) as its
    weight instead of its masked op; its frozen bias is kept (|b| with ``absolute_bias``)."""
    for layer, theta in zip(layers, thetas):
        layer.forward = _forward_with(layer, theta, absolute_bias)  # instance attribute shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _forward_with(layer: MaskedLayer, theta: Tensor, absolute_bias: bool) -> Any:
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias is not None and absolute_bias:
        bias = bias.abs()
    if isinstance(layer, MaskedConv2d):
        return lambda x: F.conv2d(x, theta, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return lambda x: F.linear(x, theta, bias)


def _prune_set(splits: Splits) -> tuple[Tensor, Tensor]:
    """The first ``PRUNE_SET_PER_CLASS`` training examples of every class, in split order."""
    labels = splits.train.labels
    idx = torch.cat([torch.nonzero(labels == c).squeeze(1)[:PRUNE_SET_PER_CLASS]
                     for c in range(splits.num_classes)])
    idx = idx.sort().values
    return splits.train.x[idx], labels[idx]


def _ranks(scores: list[Tensor], kept: list[Tensor]) -> list[Tensor]:
    """Scores → float32 ranks over all layers together: the largest kept score gets n, pruned weights 0; equal
    scores rank the lower index (layer order, then flat index) higher, matching the top-k tie-break."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    alive = torch.cat([m.reshape(-1) for m in kept])
    n = flat.numel()
    if n > _MAX_RANKED:
        raise ValueError(f"pruning at init ranks at most {_MAX_RANKED} weights exactly, got {n}")
    if torch.isnan(flat[alive]).any():
        raise FloatingPointError("pruning scores became NaN (e.g. synflow overflow in a deep net)")
    order = torch.sort(torch.where(alive, flat, -math.inf), descending=True, stable=True).indices
    ranks = torch.empty(n, dtype=torch.float32, device=flat.device)
    ranks[order] = torch.arange(n, 0, -1, dtype=torch.float32, device=flat.device)
    ranks[~alive] = 0.0
    return [part.view(s.shape) for part, s in zip(ranks.split([s.numel() for s in scores]), scores)]
