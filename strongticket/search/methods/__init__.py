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
  * ``evaluate(model, split, measure)``  the metric a split is scored by (supermask's ``eval_samples``: the mean
                          over sampled masks; default: ``measure``, the loop's evaluation of the current masks);
  * ``epoch_metrics(model, val)``  extra keys for the epoch's record;
  * ``state_dict()`` / ``load_state_dict(state)``  tensors the checkpoint must carry (Gem-Miner's frozen flags).

Every method's ticket keeps at most ⌈density·n⌉ weights: the top-k methods exactly that many; supermask and
gem-miner, whose masks are thresholds of their scores, up to that many (the summary reports the density found) —
except supermask with ``--no-supermask-cap`` (Zhou et al.'s protocol), which has no density target at all.

Methods (``--algo``):
  edge-popup            M = TopK(|S|), dS = G ⊙ W ⊙ sign(S); Ramanujan et al., CVPR 2020.
  annealed-edge-popup   edge-popup trained at density ρ^{min(1, e/T)} in epoch e = 1..E (T = ``anneal_epochs``,
                        default E): starts (nearly) dense, ends at the target ρ; Fischer & Burkholz, ICLR 2022.
  supermask             Bernoulli supermask (Zhou et al., NeurIPS 2019): p = σ(S), a fresh M ~ Bernoulli(p) every
                        training step (torch generator of the device seeded by (seed, layer, step)),
                        straight-through W ⊙ (M + p − sg(p)), so dS = σ'(S) ⊙ G ⊙ W. Scores start at logit(ρ)
                        (expected density ρ; ``--score-init constant``: Zhou's constant ``sigmoid_bias``, 0).
                        Evaluation and the ticket use the deterministic mask 1[σ(S) > 1/2] capped at the ⌈ρ·n⌉
                        largest scores (per layer, or over all layers with ``--scope global``; ``--no-supermask-cap``:
                        uncapped, as Zhou); each epoch also logs ``sampled_val_<metric>`` (one sampled mask) and
                        ``expected_density`` (mean σ(S)). ``eval_samples`` N > 0: validation and test are scored by
                        the mean over N sampled masks (Zhou: 10), the ticket keeps the deterministic mask (its test
                        metric: ``ticket_test_<metric>``). Use a large ``--lr`` (Zhou: 100).
  biprop                edge-popup's top-k and score gradient on binary weights α·sign(W) ⊙ M, α = mean |W| over
                        the kept weights of the layer (its actual count) (Diffenderfer & Kailkhura, ICLR 2021).
                        With signed-constant weights α = |W| and biprop is edge-popup. (The original's cubic
                        density ramp of its global mode is not built.)
  iterand               edge-popup plus re-randomization (Chijiwa et al., NeurIPS 2021): every ``rerand_every``
                        steps (0: after every epoch but the last), event r re-draws each pruned weight with
                        probability ``rerand_lambda`` (coin: uniform01 of stream STREAM_REDRAW, generation r) as
                        generation r of the layer's seeded init; the ticket stores each weight's last event.
                        |S| top-k with dS = G ⊙ W ⊙ sign(S), as edge-popup; ``--score-key signed``: top-k of S with
                        dS = G ⊙ W, as the original code (any top-k method but biprop may use it).
  gem-miner             Gem-Miner (Sreenivasan et al., NeurIPS 2022): scores p start U[0, 1] (seeded), M =
                        1[p > 1/2] ⊙ q, dS = G ⊙ W ⊙ q, loss + ``penalty``·‖p‖² (as weight decay 2·penalty),
                        p clamped to [0, 1] after every step; N = ``freeze_rounds`` (0: epochs − 1) rounds of
                        iterative freezing, after epochs ⌈j(E − 1)/N⌉ (``freeze_every`` T: after epochs jT + 1 < E,
                        the original's placement), keep the ⌈ρ^{j/N}·n⌉ active entries of
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

from typing import TYPE_CHECKING

from .base import Method, collapsed_layers, set_density, top_positive
from .gem_miner import GemMiner, ThresholdRule, keep_active
from .pai import PRUNE_AT_INIT, PruneAtInit, _pai, _ranks, saliency  # noqa: F401 (_ranks: tests)
from .supermask import BernoulliRule, Supermask
from .topk import (
    AnnealedEdgePopup,
    Biprop,
    EdgePopup,
    IteRand,
    SignedTopKRule,
    TopKMethod,
    reinit_scores,
    rerandomize,
)

if TYPE_CHECKING:
    from ...config import SearchConfig

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
    "TOP_K",
    "SIGNED_KEY",
    "get",
    "build",
    "set_density",
    "saliency",
    "collapsed_layers",
    "top_positive",
    "keep_active",
    "rerandomize",
    "BernoulliRule",
    "ThresholdRule",
    "SignedTopKRule",
    "TopKMethod",
    "reinit_scores",
]

METHODS: dict[str, type[Method]] = {
    "edge-popup": EdgePopup,
    "annealed-edge-popup": AnnealedEdgePopup,
    "supermask": Supermask,
    "biprop": Biprop,
    "iterand": IteRand,
    "gem-miner": GemMiner,
    **{name: _pai(name) for name in PRUNE_AT_INIT},
}


TOP_K = ("edge-popup", "annealed-edge-popup", "biprop", "iterand")  # top-k of the scores; --score-init kaiming-uniform
SIGNED_KEY = ("edge-popup", "annealed-edge-popup", "iterand")  # --score-key signed (not biprop's binary weights)


def get(name: str) -> type[Method]:
    """The method class registered as ``name``; the error lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"algo must be one of {', '.join(METHODS)}, got {name!r}") from None


def build(cfg: SearchConfig) -> Method:
    """The strategy object for ``cfg.algo``."""
    return get(cfg.algo)(cfg)
