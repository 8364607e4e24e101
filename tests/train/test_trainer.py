"""The budgeted trainer on real FcaFormer micro models and the bundled digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fcasearch.data import DataBundle, TensorImageDataset, get_dataset
from fcasearch.models import build_model, get_spec
from fcasearch.train import Budget, TrainConfig, TrainError, recalibrate_batchnorm, train_model


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return get_dataset("digits", img_size=32)


@pytest.fixture(scope="module")
def small() -> DataBundle:
    """A fifth of the digits training split: 4 steps per epoch at batch 64."""
    return get_dataset("digits", img_size=32, subset_fraction=0.2)


def nano(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(get_spec("fcaformer_nano", img_size=32, num_classes=10, in_chans=1))


def strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_micro_model_learns_digits(digits):
    result = train_model(nano(), digits, "steps=40", TrainConfig(batch_size=32), progress=False)
    assert result.status == "complete" and result.stopped_by == "steps" and result.steps == 40
    assert result.accuracy > 0.5  # chance is 0.1
    assert result.accuracy == result.history[-1]["accuracy"]  # final, not best
    assert result.epochs == pytest.approx(40 / (len(digits.train) // 32), abs=1e-5)


def test_history_and_callback_contract(small):
    seen = []

    def callback(epoch, metrics):
        seen.append((epoch, metrics))
        return False

    result = train_model(nano(), small, Budget(epochs=2), callback=callback, progress=False)
    assert result.status == "complete" and result.stopped_by == "epochs" and result.reason == ""
    assert [e for e, _ in seen] == [1, 2]
    assert set(seen[0][1]) == {
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "accuracy",
        "lr",
        "seconds",
    }
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert result.seconds >= result.train_seconds > 0
    assert result.history[-1]["lr"] < result.history[0]["lr"]  # cosine decays


def test_callback_stop_is_pruned(small):
    result = train_model(
        nano(), small, "epochs=3", callback=lambda epoch, m: epoch >= 1, progress=False
    )
    assert result.status == "pruned" and result.stopped_by == "callback"
    assert result.epochs == 1.0 and len(result.history) == 1 and "pruned" in result.reason
    assert math.isfinite(result.accuracy)


def test_deterministic_on_cpu_and_leaves_global_rng(small):
    model = nano()
    state = torch.get_rng_state()
    a = train_model(model, small, "epochs=2", progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_model(nano(), small, "epochs=2", progress=False)
    assert strip(a.history) == strip(b.history)
    c = train_model(nano(), small, "epochs=2", TrainConfig(seed=1), progress=False)
    assert strip(c.history) != strip(a.history)


def test_resume_after_interruption_matches_uninterrupted(small, tmp_path):
    full = train_model(nano(), small, "epochs=3", progress=False)

    class Killed(Exception):
        pass

    def kill_after_two(epoch, metrics):
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Killed):
        train_model(
            nano(), small, "epochs=3", callback=kill_after_two, checkpoint_path=ckpt, progress=False
        )
    assert ckpt.is_file() and [p.name for p in tmp_path.iterdir()] == [
        "trial.pt"
    ]  # no temp files left
    resumed = train_model(nano(seed=123), small, "epochs=3", checkpoint_path=ckpt, progress=False)
    assert resumed.resumed_from == 2.0 and resumed.status == "complete"
    assert strip(resumed.history) == strip(full.history)
    again = train_model(nano(seed=5), small, "epochs=3", checkpoint_path=ckpt, progress=False)
    assert again.steps == resumed.steps and strip(again.history) == strip(
        full.history
    )  # nothing left to do


def test_extending_a_budget_with_a_fixed_schedule(small, tmp_path):
    cfg = TrainConfig(schedule_epochs=3)
    full = train_model(nano(), small, "epochs=3", cfg, progress=False)
    ckpt = tmp_path / "trial.pt"
    first = train_model(nano(), small, "epochs=2", cfg, checkpoint_path=ckpt, progress=False)
    assert strip(first.history) == strip(full.history[:2])
    extended = train_model(nano(), small, "epochs=3", cfg, checkpoint_path=ckpt, progress=False)
    assert extended.resumed_from == 2.0 and strip(extended.history) == strip(full.history)


def test_checkpoint_for_other_data_is_refused(small, digits, tmp_path):
    ckpt = tmp_path / "trial.pt"
    train_model(nano(), small, "epochs=1", checkpoint_path=ckpt, progress=False)
    with pytest.raises(TrainError, match="steps per epoch"):
        train_model(nano(), digits, "epochs=1", checkpoint_path=ckpt, progress=False)


def test_budget_mid_epoch_and_seconds(small):
    r = train_model(nano(), small, "steps=6", progress=False)
    assert r.steps == 6 and r.epochs == 1.5 and [h["epoch"] for h in r.history] == [1.0, 1.5]
    t = train_model(nano(), small, Budget(seconds=1e-9), progress=False)
    assert (
        t.stopped_by == "seconds" and t.steps == 1 and len(t.history) == 1
    )  # final validation ran


def test_huge_learning_rate_diverges(small):
    r = train_model(nano(), small, "epochs=3", TrainConfig(lr=1e6, clip_grad=None), progress=False)
    assert r.status == "diverged" and "diverged" in r.reason and math.isnan(r.accuracy)


class NaNAfter(nn.Module):
    """A linear classifier whose output turns NaN from its ``n``-th training forward on."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc, self.n, self.calls = nn.Linear(32 * 32, 10), n, 0

    def forward(self, x):
        self.calls += self.training
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls >= self.n else out


def test_nan_loss_is_diverged_not_a_crash(small):
    r = train_model(NaNAfter(3), small, "epochs=2", progress=False)
    assert r.status == "diverged" and r.steps == 2 and r.stopped_by == "diverged"


class Raises(nn.Module):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.fc, self.exc = nn.Linear(1, 1), exc

    def forward(self, x):
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_out_of_memory_is_a_result(small, exc):
    r = train_model(Raises(exc), small, "epochs=1", progress=False)
    assert r.status == "oom" and r.reason.startswith("oom:") and r.steps == 0


def test_other_errors_propagate(small):
    with pytest.raises(RuntimeError, match="shape"):
        train_model(Raises(RuntimeError("bad shape")), small, "epochs=1", progress=False)


def test_config_validation():
    with pytest.raises(TrainError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(TrainError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(TrainError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.0)
    with pytest.raises(TrainError, match="fp16"):
        train_model(nn.Linear(1, 1), None, "epochs=1", TrainConfig(amp="fp16"), device="cpu")


def test_bf16_autocast_on_cpu(small):
    r = train_model(
        nano(), small, "steps=2", TrainConfig(amp="bf16", channels_last=True), progress=False
    )
    assert r.status == "complete" and math.isfinite(r.accuracy), r.reason


def test_batchnorm_recalibration_matches_the_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    x = torch.randn(40, 1, 8, 8) * 3 + 1
    batches = [(x[i : i + 10], torch.zeros(10)) for i in range(0, 40, 10)]
    model.eval()
    used = recalibrate_batchnorm(model, iter(batches), 4)
    bn = model[1]
    with torch.no_grad():
        h = model[0](x)
    assert used == 4 and not model.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    per_batch = torch.stack(
        [h[i : i + 10].var((0, 2, 3), unbiased=True) for i in range(0, 40, 10)]
    ).mean(0)
    assert torch.allclose(bn.running_var, per_batch, rtol=1e-4)


@pytest.mark.gpu
def test_cuda_amp_and_channels_last(small):
    for amp in ("bf16", "fp16"):
        r = train_model(
            nano(),
            small,
            "epochs=1",
            TrainConfig(amp=amp, channels_last=True),
            device="cuda",
            progress=False,
        )
        assert r.status == "complete" and r.accuracy > 0.1


def test_tensor_dataset_with_transform_goes_through_a_loader(small):
    flip = TensorImageDataset(
        small.train.images, small.train.labels, transform=lambda im: im.flip(-1)
    )
    bundle = DataBundle(flip, small.val, 10, 1, "flipped", (32, 32))
    a = train_model(nano(), bundle, "steps=3", progress=False)
    b = train_model(nano(), bundle, "steps=3", progress=False)
    assert a.status == "complete" and strip(a.history) == strip(b.history)
