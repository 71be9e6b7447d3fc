"""The run folder: every file an experiment writes, named in this one place.

::

    <run>/config.toml                  the resolved config (a folder never mixes two configs)
    <run>/results.json                 THE results file: protocol, features, training of every trained
                                       method, and per shot × method: mean ± CI, per-class accuracy,
                                       confusion, per-episode accuracies (for paired comparisons)
    <run>/test_episodes_<N>way_<K>shot_<E>_seed<S>.json   the saved test episodes every method shares
    <run>/val_episodes.json            the fixed meta-val episodes (model selection)
    <run>/best.pt, last.pt, history.json, training_curves.png     the method's training
    <run>/baselines/<name>/            a trained baseline (trx): the same files, its own config.toml
    <run>/shot<K>/                     train.per_shot only: the method trained at K shots (every evaluated
                                       K but episodes.n_shot): the same files, its own config.toml
    <run>/baselines/<name>/shot<K>/    train.per_shot only: the baseline trained at K shots
    <run>/accuracy_vs_shots.png, confusion_<method>.png
    <run>/missing_<split>.txt          listed videos without a file (only when some are missing)
    <run>/store/                       the LanceDB prototype store of the meta-test actions (fsar apps)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fsar_metric.errors import InputError

__all__ = ["RunLayout"]


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder (see the module docstring).

    Example:
        >>> layout = RunLayout(Path("runs/default"))
        >>> layout.results.as_posix(), layout.baseline("trx").checkpoint("best").as_posix()
        ('runs/default/results.json', 'runs/default/baselines/trx/best.pt')
        >>> layout.test_episodes(5, 1, 10_000, 0).name
        'test_episodes_5way_1shot_10000_seed0.json'
        >>> layout.for_shot(5, trained_shots=1).checkpoint("best").as_posix()
        'runs/default/shot5/best.pt'
        >>> layout.baseline("trx").for_shot(5, trained_shots=1).root.as_posix()
        'runs/default/baselines/trx/shot5'
        >>> layout.for_shot(1, trained_shots=1) == layout
        True
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def val_episodes(self) -> Path:
        return self.root / "val_episodes.json"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def training_curves(self) -> Path:
        return self.root / "training_curves.png"

    @property
    def accuracy_vs_shots(self) -> Path:
        return self.root / "accuracy_vs_shots.png"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def checkpoint(self, which: str) -> Path:
        """``best`` or ``last``."""
        return self.root / f"{which}.pt"

    def confusion(self, method: str) -> Path:
        return self.root / f"confusion_{method}.png"

    def missing(self, split: str) -> Path:
        return self.root / f"missing_{split}.txt"

    def baseline(self, name: str) -> RunLayout:
        """The folder of a trained baseline, laid out like a run."""
        return RunLayout(self.root / "baselines" / name)

    def for_shot(self, shots: int, *, trained_shots: int) -> RunLayout:
        """The folder of the model trained at ``shots`` (``train.per_shot``), laid out like a run: this
        folder itself when ``shots`` is the folder's own ``episodes.n_shot`` (``trained_shots``), else
        ``shot<K>/`` inside it.

        Raises:
            ValueError: a shot count below 1.
        """
        if shots < 1 or trained_shots < 1:
            raise InputError(f"shot counts must be >= 1, got shots={shots}, trained_shots={trained_shots}")
        return self if shots == trained_shots else RunLayout(self.root / f"shot{shots}")

    def test_episodes(self, n_way: int, n_shot: int, count: int, seed: int) -> Path:
        return self.root / f"test_episodes_{n_way}way_{n_shot}shot_{count}_seed{seed}.json"

    def saved_test_episodes(self) -> dict[int, Path]:
        """Shots K → the saved test episode list(s) of this folder."""
        out = {}
        for path in sorted(self.root.glob("test_episodes_*way_*shot_*.json")):
            out[int(path.name.split("way_", 1)[1].split("shot", 1)[0])] = path
        return out
