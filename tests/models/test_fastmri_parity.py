"""Reference tests against fastMRI's own ``Unet``/``VarNet`` (weights, outputs, checkpoints)."""

from __future__ import annotations

import pytest
import torch

from reconguard.errors import ConfigError, DataError
from reconguard.models import UNet, VarNet, load_fastmri
from reconguard.models.unet import UNetNetwork
from reconguard.physics import RandomMask
from tests.conftest import random_complex

fastmri = pytest.importorskip("fastmri")
from fastmri.data import transforms as fm_transforms  # noqa: E402
from fastmri.models import Unet as FastUnet  # noqa: E402
from fastmri.models import VarNet as FastVarNet  # noqa: E402

VARNET = {"num_cascades": 3, "sens_chans": 4, "sens_pools": 2, "chans": 6, "pools": 2}
UNET = {"chans": 4, "num_pool_layers": 3}


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its initial value (e.g. ``dc_weight`` away from 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return module.eval()


def _masks(width: int) -> torch.Tensor:
    """Two line masks with different centre widths, so each batch item has its own centre."""
    first = RandomMask(acceleration=4, center_fraction=0.16)((1, 1, 1, width), seed=0)
    second = RandomMask(acceleration=3, center_fraction=0.3)((1, 1, 1, width), seed=1)
    return torch.cat([first, second])


def test_unet_network_matches_fastmri_both_ways(gen):
    torch.manual_seed(0)
    theirs = _perturbed(FastUnet(2, 2, **UNET))
    ours = UNetNetwork(in_chans=2, out_chans=2, **UNET).eval()
    reconstructor = UNet(in_chans=2, **UNET).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == list(reconstructor.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    reconstructor.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    image = torch.randn(2, 2, 21, 19, generator=gen)  # odd sizes exercise the reflect padding
    with torch.no_grad():
        torch.testing.assert_close(ours(image), theirs(image))
        torch.testing.assert_close(reconstructor.network(image), theirs(image))


@pytest.mark.parametrize("coils", [1, 3])
def test_unet_pipeline_matches_fastmri_transform(coils, gen):
    torch.manual_seed(0)
    theirs = _perturbed(FastUnet(1, 1, **UNET))
    ours = UNet(in_chans=1, **UNET).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    mask = _masks(20)
    masked = random_complex((2, coils, 24, 20), gen) * mask
    expected = []
    for i in range(2):  # fastMRI's UnetDataTransform works slice by slice
        image = fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(masked[i])))
        image = fastmri.rss(image) if coils > 1 else image[0]
        image, mean, std = fm_transforms.normalize_instance(image, eps=1e-11)
        with torch.no_grad():
            expected.append(theirs(image.clamp(-6, 6)[None, None])[0] * std + mean)
    with torch.no_grad():
        out = ours(masked, mask)
    assert torch.all(out.imag == 0)
    torch.testing.assert_close(out.real, torch.stack(expected))


def _varnet_pair() -> tuple[torch.nn.Module, VarNet]:
    torch.manual_seed(0)
    theirs = _perturbed(FastVarNet(**VARNET))
    ours = VarNet(**VARNET).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs, ours


@pytest.mark.parametrize("coils", [4, 1])
def test_varnet_matches_fastmri(coils, gen):
    theirs, ours = _varnet_pair()
    mask = _masks(20)
    masked = random_complex((2, coils, 24, 20), gen) * mask
    with torch.no_grad():
        expected = theirs(torch.view_as_real(masked), mask.unsqueeze(-1))
        out = ours(masked, mask)
    assert out.shape == (2, 1, 24, 20) and out.dtype == torch.complex64
    assert torch.all(out.imag == 0)
    torch.testing.assert_close(out.real[:, 0], expected)


def test_varnet_checkpointing_gives_same_output_and_gradient(gen):
    _, plain = _varnet_pair()
    checkpointed = VarNet(**VARNET, checkpointing=True).eval()
    checkpointed.load_state_dict(plain.state_dict())
    mask = _masks(20)
    masked = random_complex((2, 4, 24, 20), gen) * mask
    results = []
    for model in (plain, checkpointed):
        kspace = masked.clone().requires_grad_(True)
        out = model(kspace, mask)
        out.abs().sum().backward()
        param_grad = model.cascades[0].dc_weight.grad.clone()
        results.append((out.detach(), kspace.grad, param_grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_load_fastmri_plain_state_dict(tmp_path, gen):
    torch.manual_seed(0)
    theirs = _perturbed(FastUnet(1, 1, **UNET))
    path = tmp_path / "unet_state_dict.pt"
    torch.save(theirs.state_dict(), path)
    ours = load_fastmri(path, "unet", **UNET)
    assert isinstance(ours, UNet) and not ours.training
    image = torch.randn(1, 1, 16, 16, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(ours.network(image), theirs(image))


def test_load_fastmri_lightning_checkpoint(tmp_path, gen):
    theirs, _ = _varnet_pair()
    state = {f"varnet.{k}": v for k, v in theirs.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7)  # VarNetModule's SSIM loss buffer sits beside the net
    path = tmp_path / "varnet.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state}, path)
    ours = load_fastmri(path, "varnet", **VARNET)
    mask = _masks(20)
    masked = random_complex((2, 4, 24, 20), gen) * mask
    with torch.no_grad():
        expected = theirs(torch.view_as_real(masked), mask.unsqueeze(-1))
        torch.testing.assert_close(ours(masked, mask).real[:, 0], expected)


def test_load_fastmri_mismatch_suggests_hyper_parameters(tmp_path):
    path = tmp_path / "varnet.pt"
    torch.save(FastVarNet(**VARNET).state_dict(), path)
    with pytest.raises(ConfigError, match=r"num_cascades=3.*chans=6") as info:
        load_fastmri(path, "varnet")
    assert "varnet.pt" in str(info.value) and "missing" in str(info.value)
    torch.save(FastUnet(1, 1, chans=8, num_pool_layers=3).state_dict(), path)
    with pytest.raises(ConfigError, match=r"of wrong shape .*chans=8"):
        load_fastmri(path, "unet", **UNET)


class _Payload:
    pass


def test_load_fastmri_refuses_missing_and_pickled_files(tmp_path):
    with pytest.raises(DataError, match="absent.pt"):
        load_fastmri(tmp_path / "absent.pt")
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload()}, path)
    with pytest.raises(DataError, match="evil.pt"):
        load_fastmri(path)
    with pytest.raises(ConfigError, match="unet"):
        load_fastmri(path, "modl")
