"""The plugin's only effect on training is the E0 values. ``--E0s=linear_system --E0s_refit=none``
builds the model with the foundation's E0s and writes its own at the entry of training; a run given
the same E0s by hand (``--E0s='{Z: eV}'``, mace's own path) builds the model with them. Whatever
mace computes in between from the E0s (the scale and shift, statistics, the RNG) must not make the
two differ: the trained weights are bit for bit the same, at the same seed.

Any no-grad pass before training, even of a copy of the model, moves mace's training by the last bit
(process-wide state, not the RNG), so the hand-given run makes the plugin's pass too, and only
the pass: ``same_pass_before_training``. The data leave out an element of the foundation, so that
mace 0.3.16 keeps hand-given E0s (on exactly the foundation's elements, ``load_foundations_elements``
overwrites them with the foundation's; see patches/0001).
"""

import inspect

import ase.io
import pytest
import torch

from conftest import finetune_argv, mace_train, planted_configs, report, shared_path, write_xyz
from mace_e0_plugin.glue import HeadRequest, estimate_e0s, read_e0s

pytestmark = pytest.mark.slow

PASS_DTYPE = "float64"


def same_pass_before_training(monkeypatch, batch_size: int):
    """mace's ``tools.train``, after the no-grad pass over the training set that the plugin's first
    estimate makes there (same batches, same dtype), with nothing written."""
    from mace import tools

    train = tools.train
    signature = inspect.signature(getattr(train, "_mace_e0_plugin_wraps", train))

    def after_the_pass(*args, **kwargs):
        call = signature.bind(*args, **kwargs).arguments
        model = call["model"]
        request = HeadRequest(name="Default", index=0, dataset=call["train_loader"].dataset,
                              prior_e0s=read_e0s(model, 0))
        estimate_e0s(model, [request], call["device"], batch_size=batch_size, pass_dtype=PASS_DTYPE)
        return train(*args, **kwargs)

    monkeypatch.setattr(tools, "train", after_the_pass)


def by_hand(argv, e0s):
    """The same run, given ``e0s`` through mace's own --E0s, without the plugin's options."""
    plugin = {"--E0s_refit", "--E0s_dtype"}
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in plugin:
            skip = True
            continue
        kept.append(arg)
    at = kept.index("--E0s")
    kept[at + 1] = repr({int(z): e for z, e in e0s.items()})  # every digit
    return kept


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False).state_dict()


def compare(argv, work, monkeypatch, batch_size):
    """(the plugin's run, the hand-given run): each saved model's state dict."""
    mace_train(argv)
    e0s = report(work / "plugin")["heads"]["Default"]["E0s"]
    hand = by_hand([a if a != str(work / "plugin") else str(work / "hand") for a in argv], e0s)
    with monkeypatch.context() as patch:
        same_pass_before_training(patch, batch_size)
        mace_train(hand)
    return weights(work / "plugin" / "ft.model"), weights(work / "hand" / "ft.model"), e0s


def assert_bit_identical(plugin, hand):
    assert list(plugin) == list(hand)
    different = [name for name in plugin if not torch.equal(plugin[name], hand[name])]
    assert different == [], different


def test_toy_foundation_trains_to_the_same_bits_as_the_same_e0s_given_by_hand(foundation, tmp_path, monkeypatch):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 40, seed=41, elements=(1, 8)))
    argv = finetune_argv(foundation, train, tmp_path / "plugin", "--max_num_epochs", "2", "--lr", "0.02",
                         "--plot", "False")
    plugin, hand, e0s = compare(argv, tmp_path, monkeypatch, batch_size=16)
    assert plugin["atomic_energies_fn.atomic_energies"][0].tolist() == [e0s["1"], e0s["8"]]
    assert_bit_identical(plugin, hand)

    # The comparison sees the last bit of an E0: one ulp more on H, and the weights differ.
    nudged = {**e0s, "1": float(torch.nextafter(torch.tensor(e0s["1"]), torch.tensor(0.0)))}
    other = by_hand([a if a != str(tmp_path / "plugin") else str(tmp_path / "nudged") for a in argv], nudged)
    with monkeypatch.context() as patch:
        same_pass_before_training(patch, batch_size=16)
        mace_train(other)
    nudged_weights = weights(tmp_path / "nudged" / "ft.model")
    assert any(not torch.equal(plugin[n], nudged_weights[n]) for n in plugin if "atomic_energies" not in n)


@pytest.mark.shared
def test_spice_foundation_on_pbe_ethanol_methanol_trains_to_the_same_bits(tmp_path, monkeypatch):
    model = shared_path("models", "mace_spice_15el.model")
    data = shared_path("data", "ethanol-methanol-pbe", "train_eth_meth.xyz")
    train = write_xyz(tmp_path / "train.xyz", ase.io.read(data, ":40"))
    argv = ["--name", "ft", "--work_dir", str(tmp_path / "plugin"), "--seed", "3", "--foundation_model", str(model),
            "--train_file", str(train), "--valid_fraction", "0.1", "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--max_num_epochs", "1", "--batch_size", "10", "--valid_batch_size", "10",
            "--lr", "0.01", "--device", "cpu", "--default_dtype", "float32", "--plot", "False",
            "--E0s", "linear_system", "--E0s_refit", "none", "--E0s_dtype", PASS_DTYPE]
    plugin, hand, _ = compare(argv, tmp_path, monkeypatch, batch_size=10)
    assert_bit_identical(plugin, hand)
