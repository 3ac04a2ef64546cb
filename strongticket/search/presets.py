"""Named presets: each method under the protocol of its original code (``strongticket search --preset NAME``).

A preset is a set of :class:`~strongticket.config.SearchConfig` field values, each with the file and line of the
original code it comes from (``owner/name@commit path:line``; ``docs/presets.md`` quotes every line). It fills the
fields a run does not set: precedence is defaults < preset < ``--config`` file < flags given on the command line
(in Python, ``SearchConfig(preset=NAME, lr=0.5)``: the fields passed explicitly win). ``config.json`` records the
resolved values and the preset's name; the name does not enter the run's digest, the values do.

Digits mapping (one rule for every preset): the originals ran on MNIST / CIFAR-10 with an FC, Conv4/6 or ResNet-20;
a preset keeps their per-epoch and optimizer settings (lr, momentum, weight decay, batch size, the number of epochs,
the schedule per epoch, Gem-Miner's freezing period in epochs) and runs them on the model and data of the run
(default: the digits MLP). A setting the original counts in iterations becomes the same fraction of an epoch on
digits at the preset's batch size (IteRand's 300 iterations of 352 per CIFAR-10 epoch become 9 of the 11 steps of a
digits epoch). Architecture and data set are not part of a preset.

What no preset reproduces, and why, is listed in ``docs/presets.md`` ("not reproduced").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DIGITS_TRAIN_EXAMPLES", "PRESETS", "Preset", "Setting", "get", "preset_values"]

# Training examples of the digits split (1,797 images - 359 test - 144 validation at val_fraction 0.1): 11 steps
# per epoch at batch 128, the basis of the iteration -> epoch-fraction rule of the module docstring.
DIGITS_TRAIN_EXAMPLES = 1294


@dataclass(frozen=True)
class Setting:
    """One field's value under a preset, where the original code sets it, and (``digits``) how the original's
    value was mapped to digits when the preset's value differs from it."""

    value: Any
    source: str
    digits: str = ""


@dataclass(frozen=True)
class Preset:
    """An original protocol: the method's field values; ``by_density`` lists protocols the original sets per
    target density (Gem-Miner), of which the one nearest the run's density (in log density) applies."""

    name: str
    paper: str
    code: str
    settings: Mapping[str, Setting]
    by_density: tuple[tuple[float, Mapping[str, Setting]], ...] = field(default=())

    def settings_at(self, density: float) -> dict[str, Setting]:
        """Every setting of the preset for a run at ``density``."""
        out = dict(self.settings)
        if self.by_density:
            _, extra = min(self.by_density, key=lambda item: abs(math.log(item[0]) - math.log(density)))
            out.update(extra)
        return out

    def values(self, density: float) -> dict[str, Any]:
        """Field values of the preset for a run at ``density``."""
        return {name: s.value for name, s in self.settings_at(density).items()}


def _s(value: Any, source: str, digits: str = "") -> Setting:
    return Setting(value, source, digits)


_HN = "allenai/hidden-networks@dddf2d0"
_HN_FC = f"{_HN} configs/smallscale/fc/fc_usc_unsigned.yml"
_ZH = "uber-research/deconstructing-lottery-tickets@dbad201"
_BP = "chrundle/biprop@f709fc5"
_BP_C4 = f"{_BP} configs/smallscale/conv4/conv4_kn_unsigned.yml"
_IR = "dchiji-ntt/iterand@90e0862"
_PNS = "RelationalML/PlantNSeek@da69ccf"
_PNS_MAIN = f"{_PNS} edgepopup_benchmarkdata/ticket_main.py"
_GM = "ksreenivasan/pruning_is_enough@8c4c9e8"
_GM_R20 = f"{_GM} configs/hypercube/resnet20"
_SF = "ganguli-lab/Synaptic-Flow@9dfa57a"
_SF_ARGS = f"{_SF} Results/data/singleshot/0630_2020_cifar10_lottery_vgg11_bn_run0/args.json"
_SN = "namhoonlee/snip-public@f028496"
_GR = "alecwangcq/GraSP@f17d87a"
_LAST = ("the original reports {what}; best-on-test is not reproduced (search never looks at the test split): "
         "the last epoch")


def _gem_miner_target(config: str, lr_line: int, lr: float, penalty_line: int, penalty: float, period_line: int,
                      period: int) -> dict[str, Setting]:
    return {
        "lr": _s(lr, f"{_GM_R20}/{config}:{lr_line}"),
        "penalty": _s(penalty, f"{_GM_R20}/{config}:{penalty_line}"),
        "freeze_every": _s(period, f"{_GM_R20}/{config}:{period_line}"),
    }


_PAI_INIT = _s("kaiming_normal", f"{_SF} Models/lottery_vgg.py:66")
_GRASP_INIT = _s("kaiming_normal", f"{_SF} Models/lottery_vgg.py:66", "Synaptic-Flow's port; GraSP's own N(0, 0.01) on "
                 "linear layers is not reproduced")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "ramanujan2020", "Ramanujan et al., What's Hidden in a Randomly Weighted Neural Network?, CVPR 2020",
        "allenai/hidden-networks@dddf2d093de568fc76d460a77fa2650e56e79c1a",
        {
            "algo": _s("edge-popup", f"{_HN_FC}:21"),
            "scope": _s("layer", f"{_HN} utils/conv_type.py:20"),
            "init": _s("signed_constant", f"{_HN_FC}:25"),
            "scale_fan": _s(False, f"{_HN_FC}:26"),
            "score_init": _s("method", f"{_HN} utils/conv_type.py:41"),
            "lr": _s(0.1, f"{_HN_FC}:11"),
            "lr_schedule": _s("cosine-epoch", f"{_HN} utils/schedulers.py:45"),
            "momentum": _s(0.9, f"{_HN_FC}:17"),
            "weight_decay": _s(1e-4, f"{_HN_FC}:16"),
            "batch_size": _s(128, f"{_HN_FC}:18"),
            "epochs": _s(100, f"{_HN_FC}:15"),
            "select_epoch": _s("last", f"{_HN} main.py:142", _LAST.format(what="the best test accuracy over epochs")),
        },
    ),
    Preset(
        "zhou2019", "Zhou et al., Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask, NeurIPS 2019",
        "uber-research/deconstructing-lottery-tickets@dbad201f77c7d1423569f0310971926be91d8856",
        {
            "algo": _s("supermask", f"{_ZH} README.md:62"),
            "init": _s("glorot_normal", f"{_ZH} masked_networks.py:40",
                       "a plain normal; whether TF 1.10's is truncated was not verified"),
            "score_init": _s("constant", f"{_ZH} masked_networks.py:213"),
            "score_constant": _s(0.0, f"{_ZH} train_supermask.py:63"),
            "supermask_cap": _s(False, f"{_ZH} masked_networks.py:184", "no density target: every weight is a "
                                                                                  "Bernoulli draw"),
            "lr": _s(100.0, f"{_ZH} README.md:62"),
            "lr_schedule": _s("constant", f"{_ZH} train_supermask.py:43", "decay_schedule -1: never decayed"),
            "momentum": _s(0.9, f"{_ZH} train_supermask.py:44"),
            "weight_decay": _s(0.0, f"{_ZH} train_supermask.py:45"),
            "batch_size": _s(250, f"{_ZH} train_supermask.py:47"),
            "epochs": _s(2000, f"{_ZH} README.md:62", "12,000 steps on digits (440,000 on MNIST)"),
            "eval_samples": _s(10, f"{_ZH} train_supermask.py:332"),
            "select_epoch": _s("last", f"{_ZH} train_supermask.py:341"),
        },
    ),
    Preset(
        "diffenderfer2021", "Diffenderfer & Kailkhura, Multi-Prize Lottery Ticket Hypothesis, ICLR 2021",
        "chrundle/biprop@f709fc530f77961c001a51e3d7e4bb5cb0fd41bc",
        {
            "algo": _s("biprop", f"{_BP} utils/conv_type.py:114"),
            "scope": _s("layer", f"{_BP_C4}:21"),
            "init": _s("kaiming_normal", f"{_BP_C4}:25"),
            "scale_fan": _s(True, f"{_BP_C4}:26", "fan x density (ours); the original's fan x (1 - density) is not "
                                                  "reproduced (equal at density 0.5)"),
            "score_init": _s("method", f"{_BP} utils/conv_type.py:96"),
            "lr": _s(0.1, f"{_BP_C4}:11"),
            "lr_schedule": _s("cosine-epoch", f"{_BP} main.py:166"),
            "momentum": _s(0.9, f"{_BP_C4}:17"),
            "weight_decay": _s(1e-4, f"{_BP_C4}:16"),
            "batch_size": _s(128, f"{_BP_C4}:18"),
            "epochs": _s(100, f"{_BP_C4}:15"),
            "select_epoch": _s("last", f"{_BP} main.py:186", _LAST.format(what="the best test accuracy over epochs")),
        },
    ),
    Preset(
        "chijiwa2021", "Chijiwa et al., Pruning Randomly Initialized Neural Networks with Iterative Randomization, "
        "NeurIPS 2021", "dchiji-ntt/iterand@90e0862269ba12df2c824d3f3b694b2b1ae02838",
        {
            "algo": _s("iterand", f"{_IR} config.yaml:364"),
            "scope": _s("layer", f"{_IR} models/networks/sparse_modules.py:137"),
            "init": _s("signed_constant", f"{_IR} config.yaml:362"),
            "scale_fan": _s(False, f"{_IR} models/networks/sparse_modules.py:37"),
            "score_init": _s("kaiming-uniform", f"{_IR} config.yaml:143"),
            "score_key": _s("signed", f"{_IR} models/networks/sparse_modules.py:12"),
            "lr": _s(0.3, f"{_IR} config.yaml:373"),
            "lr_schedule": _s("cosine-epoch", f"{_IR} config.yaml:173"),
            "momentum": _s(0.9, f"{_IR} config.yaml:123"),
            "weight_decay": _s(1e-4, f"{_IR} config.yaml:374"),
            "batch_size": _s(128, f"{_IR} config.yaml:171"),
            "epochs": _s(100, f"{_IR} config.yaml:170"),
            "rerand_every": _s(9, f"{_IR} config.yaml:371", "300 iterations of 352 per CIFAR-10 epoch (45,000 "
                                                            "images, batch 128) = 0.85 epoch = 9 of 11 digits steps"),
            "rerand_lambda": _s(0.1, f"{_IR} config.yaml:372"),
            "select_epoch": _s("last", f"{_IR} commands/test.py:15"),
        },
    ),
    Preset(
        "fischer2022", "Fischer & Burkholz, Plant 'n' Seek: Can You Find the Winning Ticket?, ICLR 2022",
        "RelationalML/PlantNSeek@da69ccfbcdadc396355cf64f63dbbb5d339fc9fa",
        {
            "algo": _s("annealed-edge-popup", f"{_PNS_MAIN}:108"),
            "scope": _s("layer", f"{_PNS} edgepopup_benchmarkdata/ticket_models.py:92"),
            "init": _s("kaiming_normal", f"{_PNS} plant_lottery_tickets/plant.py:104", "the planted networks' He "
                                                                                     "normal weights N(0, 2/n_in)"),
            "scale_fan": _s(False, f"{_PNS} plant_lottery_tickets/plant.py:104"),
            "score_init": _s("method", f"{_PNS} edgepopup_benchmarkdata/ticket_models.py:77"),
            "anneal_epochs": _s(0, f"{_PNS_MAIN}:108", "density rho^(e/E) before epoch e = 1..E: over all epochs"),
            "lr": _s(0.1, f"{_PNS_MAIN}:42"),
            "lr_schedule": _s("cosine-epoch", f"{_PNS_MAIN}:99"),
            "momentum": _s(0.9, f"{_PNS_MAIN}:44"),
            "weight_decay": _s(5e-4, f"{_PNS_MAIN}:46"),
            "batch_size": _s(32, f"{_PNS_MAIN}:36"),
            "epochs": _s(10, f"{_PNS_MAIN}:40"),
            "select_epoch": _s("last", f"{_PNS_MAIN}:128", "tested after every epoch, the last reported"),
        },
    ),
    Preset(
        "sreenivasan2022", "Sreenivasan et al., Rare Gems: Finding Lottery Tickets at Initialization, NeurIPS 2022",
        "ksreenivasan/pruning_is_enough@8c4c9e8c25eb8acbb418779242bfdf7ff61f6cc0",
        {
            "algo": _s("gem-miner", f"{_GM} README.md:31"),
            "scope": _s("global", f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:31"),
            "init": _s("signed_constant", f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:36"),
            "scale_fan": _s(False, f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:38"),
            "score_init": _s("method", f"{_GM} utils/conv_type.py:129"),
            "lr_schedule": _s("cosine-epoch", f"{_GM} utils/schedulers.py:31"),
            "momentum": _s(0.9, f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:24"),
            "weight_decay": _s(0.0, f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:23"),
            "batch_size": _s(128, f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:25"),
            "epochs": _s(150, f"{_GM_R20}/resnet20_sparsity_0_59_unflagT_real.yml:22"),
            "select_epoch": _s("last", f"{_GM} main.py:181", "the rounded model is tested after every epoch, none "
                                                           "is selected: the last"),
        },
        by_density=(
            (0.0059, _gem_miner_target("resnet20_sparsity_0_59_unflagT_real.yml", 16, 0.1, 53, 1e-4, 5, 5)),
            (0.0144, _gem_miner_target("resnet20_sparsity_1_44_unflagT_real.yml", 19, 0.1, 54, 1e-4, 8, 5)),
            (0.0372, _gem_miner_target("resnet20_sparsity_3_72_unflagT_real.yml", 16, 0.1, 51, 3e-5, 5, 5)),
            (0.2, _gem_miner_target("resnet20_quantized_iter_hc_target_sparsity_20_without_unflag.yml", 16, 0.1, 51,
                                    1e-5, 5, 5)),
            (0.5, _gem_miner_target("resnet20_target_sparsity_50.yml", 18, 0.05, 53, 1e-8, 7, 8)),
        ),
    ),
    Preset(
        "lee2019", "Lee et al., SNIP: Single-shot Network Pruning based on Connection Sensitivity, ICLR 2019",
        "namhoonlee/snip-public@f0284968bfa9b17d335587183b1c84cf628efe84",
        {
            "algo": _s("snip", f"{_SN} snip/model.py:69"),
            "scope": _s("global", f"{_SN} snip/model.py:181"),
            "init": _s("kaiming_normal", f"{_SN} snip/main.py:31", "the original's variance scaling (gain 1): "
                                                                  "nearest is kaiming_normal (gain sqrt 2)"),
            "rounds": _s(1, f"{_SF_ARGS}:32"),
        },
    ),
    Preset(
        "wang2020", "Wang et al., Picking Winning Tickets Before Training by Preserving Gradient Flow, ICLR 2020",
        "alecwangcq/GraSP@f17d87ac537bfce476ac2424171a8b6eb56499db",
        {
            "algo": _s("grasp", f"{_GR} pruner/GraSP.py:140"),
            "scope": _s("global", f"{_GR} pruner/GraSP.py:148"),
            "init": _GRASP_INIT,
            "rounds": _s(1, f"{_GR} configs/cifar10/vgg19/GraSP_98.json:11"),
        },
    ),
    Preset(
        "tanaka2020", "Tanaka et al., Pruning neural networks without any data by iteratively conserving synaptic "
        "flow, NeurIPS 2020", "ganguli-lab/Synaptic-Flow@9dfa57aa4012c34028ee646d367f18e32f0e3bc7",
        {
            "algo": _s("synflow", f"{_SF_ARGS}:44"),
            "scope": _s("global", f"{_SF} main.py:61"),
            "init": _PAI_INIT,
            "rounds": _s(100, f"{_SF_ARGS}:34"),
        },
    ),
)}


# The preset that reproduces each method's paper (the benchmarks' "original" protocol); random and magnitude take
# Synaptic-Flow's, the paper that benchmarks them.
PRESET_OF: dict[str, str] = {
    "edge-popup": "ramanujan2020", "annealed-edge-popup": "fischer2022", "supermask": "zhou2019",
    "biprop": "diffenderfer2021", "iterand": "chijiwa2021", "gem-miner": "sreenivasan2022", "snip": "lee2019",
    "grasp": "wang2020", "synflow": "tanaka2020", "random": "tanaka2020", "magnitude": "tanaka2020",
}


def get(name: str) -> Preset:
    """The preset called ``name``; the error lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}") from None


def preset_values(name: str, density: float) -> dict[str, Any]:
    """The field values preset ``name`` sets for a run at ``density``."""
    return get(name).values(density)
