"""A trial whose training was interrupted resumes from its per-epoch checkpoint, and its row
counts the training done before the interruption."""

from __future__ import annotations

import numpy as np

from fcasearch.search.objective import TrialContext, _build_seeded, evaluate
from fcasearch.search.options import SearchOptions
from fcasearch.space import load_space
from fcasearch.train import Budget, TrainConfig, train_model


def test_a_resumed_trial_counts_its_training_before_the_checkpoint(tiny_space, tmp_path):
    options = SearchOptions(
        space=str(tiny_space), objectives="accuracy macs", budget="epochs=2", batch_size=32,
        out=str(tmp_path / "run"), progress=False, measure=False,
    )  # fmt: skip
    space = load_space(str(tiny_space))
    ctx = TrialContext(options=options, space=space, checkpoint_dir=tmp_path / "checkpoints")
    spec = space.sample_feasible(np.random.default_rng(0))
    # the first epoch of the trial, as a run killed after it left it
    ckpt = ctx.checkpoint_dir / f"{spec.arch_id}-epochs2-s{options.seed}.pt"
    ckpt.parent.mkdir(parents=True)
    first = train_model(
        _build_seeded(spec, options.seed), ctx.data_for(spec.img_size), Budget(epochs=1),
        TrainConfig(lr=options.lr, batch_size=options.batch_size, seed=options.seed),
        checkpoint_path=ckpt, progress=False,
    )  # fmt: skip
    assert ckpt.exists() and first.epochs == 1
    res = evaluate(spec, ctx)
    assert res.status == "complete" and res.epochs == 2
    assert "resumed from its checkpoint at epoch 1" in res.notes["resumed"]
    assert res.train_seconds >= first.seconds  # the epoch before the checkpoint counts
