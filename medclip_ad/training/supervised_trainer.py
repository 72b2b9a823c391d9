"""The training loop as MONAI's `SupervisedTrainer`: what the bundle's `train#trainer` is, for MONAI's tools.

MONAI's workflows (the model zoo's checks, MONAI Label, federated learning) expect a trainer engine with
`max_epochs`, handlers and events. `SessionTrainer` is one whose iterations are the steps of the package's
own `TrainingSession`: the same seeded batch order, data-parallel shares, epoch checkpoints and exact
resume as `medclip-ad train`, so the checkpoints are the same whichever drives the loop. MONAI handlers
(e.g. `StatsHandler`) see each step's loss parts as `engine.state.output` (a dict; "total" is minimised).
The forward pass is the method's own (`MethodTraining.step`); `inferer` is kept for MONAI's tools, which
look for `train#inferer`.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.inferers import Inferer

from medclip_ad.training.loop import TrainingRun, TrainingSession


class _EpochSteps:
    """The engine's data: each epoch, the session's (index, global batch, share) steps in the seeded order."""

    def __init__(self, session: TrainingSession) -> None:
        self.session = session
        self.engine: Engine | None = None

    def __len__(self) -> int:
        return self.session.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[int, list[int], list[int]]]:
        epoch = self.engine.state.epoch - 1  # ignite counts epochs from 1 and asks for data after EPOCH_STARTED
        return ((index, batch, share) for index, (batch, share) in enumerate(self.session.epoch_steps(epoch)))


class SessionTrainer(SupervisedTrainer):
    """A `SupervisedTrainer` running `session`'s remaining epochs, one session step per iteration."""

    def __init__(self, session: TrainingSession, max_epochs: int | None = None, inferer: Inferer | None = None,
                 train_handlers: Sequence | None = None) -> None:
        epochs = session.settings.epochs
        if max_epochs is not None and max_epochs != epochs:
            raise ValueError(f"max_epochs {max_epochs} differs from the recipe's {epochs} epochs")
        self.session = session
        steps = _EpochSteps(session)
        device = next(session.method.module.parameters()).device
        super().__init__(device=device, max_epochs=epochs, train_data_loader=steps,
                         network=session.method.module, optimizer=session.optimizer, loss_function=None,
                         epoch_length=len(steps), iteration_update=self._session_step, inferer=inferer,
                         train_handlers=train_handlers,
                         decollate=False)
        steps.engine = self
        self.state.epoch = session.start_epoch  # a resumed session continues after its checkpoint's epoch
        self.state.iteration = session.start_epoch * len(steps)
        self.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: session.end_epoch(engine.state.epoch - 1))
        self.training_run: TrainingRun | None = None

    def _session_step(self, engine: Engine, step: tuple[int, list[int], list[int]]) -> dict[str, Any]:
        index, batch, share = step
        return self.session.step(engine.state.epoch - 1, index, batch, share)

    def run(self) -> None:
        """Train the remaining epochs; `training_run` then holds what `medclip-ad train` would return."""
        with self.session:
            super().run()
        self.training_run = self.session.finish()
