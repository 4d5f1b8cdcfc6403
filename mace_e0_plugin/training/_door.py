"""``mace_run_train --E0s=linear_system``: mace's run, translated for the ``E0Fit`` of ``_run``.

``TrainingDoor`` is what mace's hooks (patches/0002) or our wrappers of mace-torch 0.3.x
(``_adapters``) call, one method per step of mace's run, in order::

    add_arguments(parser)                      our options, in mace's own parser (--help, YAML)
    configure(args)                            reads the E0s values; a run that asks starts here
    dataset_loaded(head, configs, atoms)       a head's training set and IsolatedAtom energies
    atomic_energies(E0s, z_table, ...)         E0s to build the model with: the foundation's
    before_training(model, train_loader, ...)  the fit's start: collect, solve, write, report
    (the fit's own epoch_start / epoch_end)    --E0s_refit=epoch, called on ``run`` directly
    after_training(checkpoint_handler, ...)    --E0s_refit=final: the checkpoints mace reloads
    training_failed()                          tools.train raised

It reads mace's ``Namespace`` once (``_mace_args.settings_from_args``) and holds at most one fit;
nothing of the run lives anywhere else.

The rules it adds to the fit's:
- A run that does not ask for linear_system is mace's own: ``configure`` reads its E0s values and
  nothing else, and a fault there leaves the run as if the plugin were not installed.
- Before the first step, bad input stops the run with one line (a SystemExit, as argparse's own
  errors are), options spelled as mace_run_train spells them; so does a mace-torch that differs
  from what the wrappers rely on.

Why at the entry of training: by then the model is built, LoRA is injected, the cueq conversion
and any checkpoint restore are done, and mace 0.3.x's ``load_foundations_elements`` has had its
chance to overwrite ``atomic_energies`` with the foundation's. Writing any earlier would be undone.
Why the final refit rewrites checkpoints: after training, mace 0.3.x reloads the latest
checkpoint(s) to save ``name.model`` and to evaluate; anything written into the model is lost.
"""

import contextlib
import functools
import logging
from typing import List, Optional

from ..errors import E0Error
from ..services import training_spelling
from ._compat import UnsupportedMace, untested_warning
from ._failures import describe
from ._mace_args import add_arguments, asks_for_linear_system, mentions_linear_system, settings_from_args
from ._run import KEYWORD, E0Fit

ERROR_PREFIX = "mace-e0-plugin: error: "

log = logging.getLogger("mace_e0_plugin")


@contextlib.contextmanager
def stopping_before_training(door: "TrainingDoor"):
    """Before the first step, bad input (or a mace-torch the wrappers do not support) stops mace
    with one line, in mace_run_train's spelling of options, and no traceback (a SystemExit, as
    argparse's own errors are)."""
    try:
        yield
    except E0Error as error:
        door.end()
        raise SystemExit(ERROR_PREFIX + error.render(training_spelling)) from None
    except UnsupportedMace as error:
        door.end()
        raise SystemExit(ERROR_PREFIX + str(error)) from None


def _stops_before_training(step):
    @functools.wraps(step)
    def guarded(door: "TrainingDoor", *args, **kwargs):
        with stopping_before_training(door):
            return step(door, *args, **kwargs)
    return guarded


class TrainingDoor:
    """The run in progress, if it asked for linear_system: ``configure`` starts its fit, ``end``
    stops it.

    ``unsupported``: how the installed mace-torch differs from what the wrappers rely on
    (``_compat``); a run that asks for linear_system then stops at ``configure``, and every other
    run is untouched.
    """

    def __init__(self, unsupported: Optional[List[str]] = None):
        self.run: Optional[E0Fit] = None
        self.unsupported = unsupported
        self._untested: Optional[str] = None  # the warning for a release outside the tested ones

    def stopping_before_training(self):
        """A context in which bad input stops mace with one line (for the adapters' own checks)."""
        return stopping_before_training(self)

    @property
    def active(self) -> bool:
        return self.run is not None

    def add_arguments(self, parser) -> None:
        add_arguments(parser)

    def asks(self, args) -> bool:
        """Whether ``args`` ask for linear_system, reading the E0s values only. Never raises for a
        run that did not ask; a run whose options cannot be read but mention the keyword is
        stopped (UnsupportedMace), rather than trained without us."""
        try:
            return asks_for_linear_system(args)
        except Exception as error:  # pylint: disable=broad-except
            try:
                mentioned = mentions_linear_system(args)
            except Exception:  # pylint: disable=broad-except
                mentioned = False
            if mentioned:
                raise UnsupportedMace([f"its run options could not be read ({describe(error)})"]) from None
            return False

    @_stops_before_training
    def configure(self, args) -> Optional[E0Fit]:
        self.end()
        if not self.asks(args):
            return None
        if self.unsupported:
            raise UnsupportedMace(self.unsupported)
        self._untested = untested_warning()  # logged at the entry of training, in mace's log
        settings = settings_from_args(args)
        self.run = E0Fit(settings) if settings.heads else None
        return self.run

    @_stops_before_training
    def dataset_loaded(self, head_name: str, train_configs, isolated_atoms: Optional[dict]) -> bool:
        return self.run is not None and self.run.data_loaded(head_name, len(train_configs), isolated_atoms)

    @_stops_before_training
    def atomic_energies(self, E0s, z_table, model_foundation=None):  # pylint: disable=invalid-name
        """For --E0s=linear_system: the foundation's E0s, to build the model with. None for any
        other --E0s (mace computes them)."""
        if self.run is None or not isinstance(E0s, str) or E0s.strip().lower() != KEYWORD:
            return None
        return self.run.placeholder_e0s(z_table.zs, model_foundation)

    @_stops_before_training
    def before_training(self, model, train_loader, device, swa=None, distributed: bool = False,
                        checkpoint_handler=None, rank: int = 0, loss_fn=None, optimizer=None,
                        **_unused) -> None:
        """mace's ``tools.train`` arguments, as the fit takes them."""
        if self.run is None:
            return
        if self._untested:
            log.warning(self._untested)
        started = self.run.start(model, train_loader, device, loss_fn=loss_fn, optimizer=optimizer,
                                 swa_model=swa.model if swa is not None else None,
                                 swa_loss_fn=swa.loss_fn if swa is not None else None,
                                 checkpoint_io=checkpoint_handler.io if checkpoint_handler is not None else None,
                                 distributed=distributed, rank=rank)
        if not started:
            self.end()  # nothing more to do in this run

    def after_training(self, checkpoint_handler=None, **_unused) -> None:
        """Never raises: mace saves and evaluates as it would."""
        if self.run is not None and checkpoint_handler is not None:
            self.run.finish(checkpoint_handler.io)
        self.end()

    def training_failed(self) -> None:
        self.end()

    def end(self) -> None:
        """The one place a run stops: its loss hooks go, and it is forgotten."""
        run, self.run = self.run, None
        if run is not None:
            run.close()
