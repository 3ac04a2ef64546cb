"""Named presets (the originals' protocols) and the fields they brought: every preset runs on digits and records
what ran, anything given explicitly beats the preset, and each new field does what the original code does."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.data.splits import load_splits
from strongticket.evaluate import evaluate, evaluate_ticket
from strongticket.masks import keep_count, topk_mask
from strongticket.models import model_from_config
from strongticket.nn import MaskedLinear, masked_layers
from strongticket.random import STREAM_BIAS_SCORES, init_scores, init_weight
from strongticket.search import methods, presets, run_search
from strongticket.search.loop import lr_factor

DOCS = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
FAST = dict(widths=(16, 16), device="cpu")
# the fewest epochs each preset allows (Gem-Miner's freezing period at density 0.5 is 8 epochs: 10 epochs)
EPOCHS = {"sreenivasan2022": 10}


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_runs_on_digits_and_records_the_resolved_config(tmp_path, name):
    epochs = EPOCHS.get(name, 2)
    cfg = SearchConfig(preset=name, epochs=epochs, out=str(tmp_path), **FAST)
    for field, setting in presets.get(name).settings_at(cfg.density).items():
        if field != "epochs":
            assert getattr(cfg, field) == setting.value, field
    summary = run_search(cfg, progress=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded == cfg.to_dict() and recorded["preset"] == name and recorded["epochs"] == epochs
    assert SearchConfig.from_dict(recorded) == cfg  # the record gives the same run back, preset or not
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert summary["best_epoch"] == (epochs if methods.get(cfg.algo).trains else 0)  # every original: the last


def test_flags_and_config_files_override_the_preset(tmp_path, capsys):
    (tmp_path / "run.toml").write_text('preset = "ramanujan2020"\nweight-decay = 0.0\nlr = 0.05\n')
    out = tmp_path / "run"
    assert main(["search", "--config", str(tmp_path / "run.toml"), "--lr", "0.02", "--epochs", "1", "--widths",
                 "16,16", "--device", "cpu", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["lr"], cfg["weight_decay"], cfg["epochs"]) == (0.02, 0.0, 1)  # flag > file > preset
    assert (cfg["batch_size"], cfg["lr_schedule"], cfg["preset"]) == (128, "cosine-epoch", "ramanujan2020")
    out2 = tmp_path / "run2"
    assert main(["search", "--preset", "chijiwa2021", "--rerand-every", "5", "--epochs", "1", "--widths", "16,16",
                 "--device", "cpu", "--out", str(out2)]) == 0
    cfg = json.loads((out2 / "config.json").read_text())
    assert (cfg["algo"], cfg["rerand_every"], cfg["score_key"]) == ("iterand", 5, "signed")
    capsys.readouterr()


def test_python_fields_given_beat_the_preset_and_replace_keeps_what_was_resolved():
    cfg = SearchConfig(preset="zhou2019", lr=10.0)
    assert (cfg.lr, cfg.batch_size, cfg.algo) == (10.0, 250, "supermask")
    again = dataclasses.replace(cfg, seed=3)
    assert (again.lr, again.epochs, again.seed, again.preset) == (10.0, 2000, 3, "zhou2019")
    with pytest.raises(TypeError, match="keyword arguments only"):
        SearchConfig("digits")


def test_the_preset_name_is_a_label_the_digest_hashes_the_values():
    cfg = SearchConfig(preset="ramanujan2020")
    plain = SearchConfig(**presets.preset_values("ramanujan2020", 0.5))
    assert cfg.digest() == plain.digest() and cfg.preset != plain.preset
    assert SearchConfig().digest() == "3c6a74132421"
    assert SearchConfig().run_name() == "mlp-digits-edge-popup-d0.5-s0-3c6a74132421"


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="nope"), "preset must be one of ramanujan2020, zhou2019, .*tanaka2020, got 'nope'"),
    (dict(preset="chijiwa2021", algo="edge-popup"),
     r"rerand_every needs algo iterand, got algo 'edge-popup' \(preset chijiwa2021 sets algo, .*overrides it\)"),
    (dict(preset="ramanujan2020", density=0.0), r"density must be in \(0, 1\], got 0.0"),
])
def test_bad_presets_and_conflicts_name_the_preset(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**kwargs)


@pytest.mark.parametrize("density, lr, penalty, every", [
    (0.5, 0.05, 1e-8, 8), (0.2, 0.1, 1e-5, 5), (0.1, 0.1, 1e-5, 5), (0.03, 0.1, 3e-5, 5), (0.01, 0.1, 1e-4, 5),
    (0.005, 0.1, 1e-4, 5),
])
def test_gem_miner_preset_takes_the_paper_config_nearest_the_density(density, lr, penalty, every):
    cfg = SearchConfig(preset="sreenivasan2022", density=density)
    assert (cfg.lr, cfg.penalty, cfg.freeze_every, cfg.scope, cfg.epochs) == (lr, penalty, every, "global", 150)


def test_docs_quote_every_source_a_preset_cites():
    text = DOCS.read_text()
    for p in presets.PRESETS.values():
        assert f"`{p.name}`" in text and p.code.split("@")[1][:7] in text
        sources = [s.source for s in p.settings.values()] + [s.source for _, extra in p.by_density
                                                              for s in extra.values()]
        for source in sources:
            repo, location = source.split(" ", 1)
            assert f"{repo} {location}" in text, (p.name, source)


# ------------------------------------------------------------------------------------------ lr schedules


def test_lr_schedules_cosine_per_step_per_epoch_and_constant():
    step, epoch, constant = (lr_factor(k, 11, 4) for k in ("cosine-step", "cosine-epoch", "constant"))
    assert [step(s) for s in (0, 22, 44)] == [1.0, pytest.approx(0.5), pytest.approx(0.0, abs=1e-12)]
    for e in range(4):  # the originals: 1/2 (1 + cos(pi e / E)) for the whole of epoch e, never 0
        assert {epoch(s) for s in range(11 * e, 11 * e + 11)} == {0.5 * (1 + math.cos(math.pi * e / 4))}
    assert {constant(s) for s in range(50)} == {1.0}
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        lr_factor("linear", 11, 4)


def test_a_cosine_epoch_run_trains_each_epoch_at_its_own_rate_and_last_selects_the_last(tmp_path):
    cfg = SearchConfig(lr=0.1, epochs=3, lr_schedule="cosine-epoch", select_epoch="last", batch_size=256,
                       out=str(tmp_path), **FAST)
    summary = run_search(cfg, progress=False)
    recs = _records(tmp_path)  # "lr" is the rate after the epoch's last step: the next epoch's
    assert [r["lr"] for r in recs] == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)])
    assert summary["best_epoch"] == 3
    model_masks = evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")
    assert model_masks["test_acc"] == summary["test_acc"]


# ------------------------------------------------------------------------------------------ score init and key


def test_kaiming_uniform_scores_are_edge_popups_words_sqrt6_wider():
    a = init_scores((7, 30), 3, 1)
    b = init_scores((7, 30), 3, 1, mode="kaiming-uniform")
    torch.testing.assert_close(b.double(), a.double() * math.sqrt(6), rtol=1e-6, atol=0)
    assert float(b.abs().max()) <= math.sqrt(6 / 30)
    with pytest.raises(ValueError, match="mode must be one of edge-popup, kaiming-uniform"):
        init_scores((7, 30), 3, 1, mode="zeros")


def test_iterand_preset_starts_from_kaiming_uniform_scores_weights_and_biases():
    cfg = SearchConfig(algo="iterand", score_init="kaiming-uniform", bias=True, bias_scores=True, **FAST)
    splits = load_splits("digits")
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    methods.build(cfg).prepare(model, splits)
    for layer in masked_layers(model):
        shape = tuple(layer.scores.shape)
        assert torch.equal(layer.scores.detach(), init_scores(shape, 0, layer.layer_index, mode="kaiming-uniform"))
        assert torch.equal(layer.bias_scores.detach(),
                           init_scores((shape[0],), 0, layer.layer_index, fan_in=shape[1], kind=STREAM_BIAS_SCORES,
                                       mode="kaiming-uniform"))


def test_signed_key_keeps_the_largest_s_and_passes_g_times_w_without_sign():
    torch.manual_seed(0)
    lay = MaskedLinear(11, 7, density=0.3, init="kaiming_normal", seed=3, layer=1)
    lay.rule = methods.SignedTopKRule([lay])
    with torch.no_grad():
        lay.scores.copy_(torch.randn(7, 11))
    s = lay.scores.detach().double()
    k = keep_count(0.3, 77)
    expected = torch.zeros(77, dtype=torch.bool)
    expected[torch.sort(s.view(-1), descending=True, stable=True).indices[:k]] = True
    assert torch.equal(lay.mask.view(-1), expected)  # the most negative scores are pruned first, not the smallest |S|
    assert not torch.equal(lay.mask, topk_mask(lay.scores.detach(), k))  # not edge-popup's top-k of |S|
    x = torch.randn(5, 11, dtype=torch.float64)
    dy = torch.randn(5, 7, dtype=torch.float64)
    y = lay(x.float())
    w = lay.weight.double()
    torch.testing.assert_close(y.double(), x @ (w * expected.view(7, 11)).T, rtol=1e-5, atol=1e-6)
    (y.double() * dy).sum().backward()
    torch.testing.assert_close(lay.scores.grad.double(), (dy.T @ x) * w, rtol=1e-5, atol=1e-6)  # G ⊙ W, no sign(S)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_signed_key_search_keeps_exactly_ceil_density_n_and_resumes_bit_for_bit(tmp_path, scope):
    kw = dict(algo="iterand", score_key="signed", score_init="kaiming-uniform", rerand_every=7, density=0.2,
              scope=scope, lr_schedule="cosine-epoch", epochs=4, batch_size=128, **FAST)
    run_search(SearchConfig(out=str(tmp_path / "a"), **kw), progress=False)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(SearchConfig(out=str(tmp_path / "b"), **kw), on_epoch=stop, progress=False)
    summary = run_search(SearchConfig(out=str(tmp_path / "b"), **kw), progress=False)
    assert [r["mask_sha256"] for r in _records(tmp_path / "a")] == [r["mask_sha256"] for r in _records(tmp_path / "b")]
    sizes = (64 * 16, 16 * 16, 16 * 10)
    kept = keep_count(0.2, sum(sizes)) if scope == "global" else sum(keep_count(0.2, n) for n in sizes)
    assert summary["kept_weights"] == kept
    assert evaluate_ticket(tmp_path / "b" / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]


# ------------------------------------------------------------------------------------------ supermask


def test_supermask_constant_init_and_uncapped_mask_have_no_density_target():
    lay = MaskedLinear(30, 40, density=0.1, init="kaiming_normal", seed=1, layer=0)
    capped, free = methods.BernoulliRule([lay], seed=5), methods.BernoulliRule([lay], seed=5, cap=False)
    with torch.no_grad():
        lay.scores.copy_(torch.linspace(-1, 3, 1200).view(40, 30))
    assert int(capped.mask(lay).sum()) == keep_count(0.1, 1200)
    assert torch.equal(free.mask(lay), lay.scores.detach() > 0)  # every σ(S) > 1/2, however many
    cfg = SearchConfig(algo="supermask", score_init="constant", supermask_cap=False, **FAST)
    splits = load_splits("digits")
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    methods.build(cfg).prepare(model, splits)
    assert all(not layer.scores.detach().any() for layer in masked_layers(model))


def test_sampled_evaluation_is_the_mean_over_fresh_masks_and_the_ticket_keeps_the_rounded_mask(tmp_path):
    cfg = SearchConfig(algo="supermask", lr=50.0, eval_samples=4, epochs=3, batch_size=128, out=str(tmp_path),
                       **FAST)
    summary = run_search(cfg, progress=False)
    assert summary["eval_samples"] == 4 and "ticket_test_acc" in summary
    recs = _records(tmp_path)
    assert all("rounded_val_acc" in r and "sampled_val_acc" not in r for r in recs)
    ticket = evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")
    assert ticket["test_acc"] == summary["ticket_test_acc"]  # `eval` scores the one mask a ticket holds
    # the mean over samples, each drawn from its own stream
    splits = load_splits("digits")
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    method = methods.build(cfg)
    method.prepare(model, splits)
    layers = masked_layers(model)
    with torch.no_grad():
        for layer in layers:
            layer.scores.normal_(generator=torch.Generator().manual_seed(layer.layer_index))
    method.rule.step = 9
    seen = []

    def measure(m, split):
        seen.append(torch.cat([(layer.effective_weight() != 0).view(-1) for layer in layers]))
        return evaluate(m, split)

    metric, _ = method.evaluate(model, splits.test, measure)
    assert len(seen) == 4 and len({tuple(s.tolist()) for s in seen}) == 4  # four different masks
    singles = []
    for j in range(4):
        method.rule.sample_in_eval, method.rule.eval_sample = True, j
        singles.append(evaluate(model, splits.test)[0])
    method.rule.sample_in_eval, method.rule.eval_sample = False, 0
    assert metric == pytest.approx(sum(singles) / 4)


# ------------------------------------------------------------------------------------------ gem-miner, init


@pytest.mark.parametrize("epochs, every, after", [
    (150, 5, list(range(6, 147, 5))),  # the paper: 29 rounds, after epochs 6, 11, ..., 146
    (151, 5, list(range(6, 147, 5))),  # a round after the last epoch is left out: none could be selected
    (12, 8, [9]),
    (7, 5, [6]),
])
def test_freeze_every_places_rounds_after_epochs_t_plus_1_2t_plus_1(epochs, every, after):
    gm = methods.GemMiner(SearchConfig(algo="gem-miner", epochs=epochs, freeze_every=every))
    assert gm.freeze_after == after and gm.rounds == len(after)
    assert gm.density_at(after[-1]) == 0.5 and gm.density_at(after[0] - 1) == 1.0


def test_glorot_normal_is_the_normal_draws_times_sqrt_2_over_fan_in_plus_fan_out():
    conv = init_weight((16, 3, 3, 3), "glorot_normal", 1, 2)
    normal = init_weight((16, 3, 3, 3), "kaiming_normal", 1, 2, nonlinearity="linear")  # 1/sqrt(27) N(0, 1)
    ratio = math.sqrt(2 / (27 + 16 * 9)) * math.sqrt(27)
    torch.testing.assert_close(conv.double(), normal.double() * ratio, rtol=1e-6, atol=1e-9)
    scaled = init_weight((10, 30), "glorot_normal", 1, 2, density=0.25, scale_fan=True)
    torch.testing.assert_close(scaled.double(), init_weight((10, 30), "glorot_normal", 1, 2).double() * 2,
                               rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("kwargs, message", [
    (dict(algo="gem-miner", epochs=6, freeze_every=5), r"freeze_every must be an integer in \[0, 4\], got 5"),
    (dict(algo="gem-miner", epochs=20, freeze_every=5, freeze_rounds=3), "give freeze_every or freeze_rounds"),
    (dict(freeze_every=5), "freeze_every 5 needs algo gem-miner"),
    (dict(eval_samples=3), "eval_samples 3 needs algo supermask"),
    (dict(supermask_cap=False), "supermask_cap False needs algo supermask"),
    (dict(algo="biprop", score_key="signed"), "score_key 'signed' needs algo edge-popup or annealed-edge-popup or "
                                              "iterand"),
    (dict(algo="supermask", score_init="kaiming-uniform"), "score_init 'kaiming-uniform' needs algo edge-popup"),
    (dict(score_init="constant"), "score_init 'constant' needs algo supermask"),
    (dict(algo="supermask", score_constant=1.0), "score_constant needs score_init constant"),
    (dict(lr_schedule="step"), "lr_schedule must be one of cosine-step, cosine-epoch, constant"),
    (dict(select_epoch="best-test"), "select_epoch must be one of best-val, last"),
    (dict(algo="supermask", eval_samples=-1), r"eval_samples must be an integer in \[0, 10000\]"),
])
def test_protocol_fields_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**kwargs)


def test_protocol_fields_leave_digests_alone_unless_set():
    base = SearchConfig()
    assert SearchConfig(lr_schedule="cosine-step", select_epoch="best-val").digest() == base.digest()
    assert SearchConfig(lr_schedule="cosine-epoch").digest() != base.digest()
    assert SearchConfig(algo="supermask").digest() == SearchConfig(algo="supermask", supermask_cap=True,
                                                                   eval_samples=0).digest()
